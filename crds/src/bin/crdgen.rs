//! Prints the `LoadBalancerPool` CRD as YAML:
//! `cargo run -p weir-crds --bin crdgen > crds/loadbalancerpool.yaml`.

fn main() {
    print!("{}", weir_crds::crd_yaml());
}
