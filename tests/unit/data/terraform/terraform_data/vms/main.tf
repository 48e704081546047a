resource "terraform_data" "node" {
  for_each = toset(["order-1", "payment-1"])
  input = { address = "10.0.0.${length(each.key)}" }
}
output "proxies" {
  value = { for k, n in terraform_data.node : "${k}.default" => { address = n.output.address } }
}
