# libvirt VMs for the seed mesh's proxies, named by the mesh_proxies output (libvirt domains
# have no tags). On AWS or GCP, tag the instances instead:
#   aws_instance:            tags     = { mesh_proxy = "order-1.default", mesh_site = "eu-west" }
#   google_compute_instance: metadata = { mesh_proxy = "order-1.default" }, labels = { mesh_site = "europe-west1" }
terraform {
  required_providers {
    libvirt = { source = "dmacvicar/libvirt" }
  }
}

locals {
  proxies = toset(["ingress", "order-1", "order-2", "payment-1", "payment-2"])
}

resource "libvirt_volume" "root" {
  for_each       = local.proxies
  name           = "${each.key}.qcow2"
  base_volume_id = "/var/lib/libvirt/images/debian-12-genericcloud-amd64.qcow2"
}

resource "libvirt_domain" "vm" {
  for_each = local.proxies
  name     = each.key
  memory   = 1024
  disk {
    volume_id = libvirt_volume.root[each.key].id
  }
  network_interface {
    network_name   = "default"
    wait_for_lease = true # the address is in the state only once the domain has a lease
  }
}

output "mesh_proxies" {
  value = {
    for name, vm in libvirt_domain.vm : "${name}.default" => {
      instance = "libvirt_domain.vm[\"${name}\"]"
      site     = "lab"
    }
  }
}
