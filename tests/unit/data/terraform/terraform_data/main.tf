module "vms" {
  source = "./vms"
}
output "mesh_proxies" {
  value = module.vms.proxies
}
