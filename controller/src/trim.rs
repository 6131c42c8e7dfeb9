//! What the caches keep of each object: only what compiling pools, mapping changes back to
//! pools and writing status read. With 1,000 pools of 100 endpoints the dropped parts
//! (`managedFields`, kubectl's last-applied annotation, endpoints' `targetRef`, `nodeName`,
//! `zone` and `hints`) are most of the cached bytes; client-go's informers offer the same
//! through transform functions.
//!
//! Applied to every watched object before the reflectors store it, so nothing downstream can
//! come to depend on a dropped field unnoticed: the unit tests list what is kept.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weir_crds::LoadBalancerPool;

/// Drops what no part of the controller reads from any object's metadata: field managers,
/// annotations (kubectl's last-applied copy of the whole object among them) and owners.
/// Name, namespace, uid, labels, generation and resourceVersion stay.
fn metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
}

/// Keeps a pool's metadata essentials, spec and status.
pub fn pool(lbp: &mut LoadBalancerPool) {
    metadata(&mut lbp.metadata);
}

/// Keeps a Service's metadata essentials and spec (its ports are resolved against).
pub fn service(service: &mut Service) {
    metadata(&mut service.metadata);
    service.status = None;
}

/// Keeps a slice's metadata essentials, address type, ports, and each endpoint's addresses
/// and conditions.
pub fn slice(slice: &mut EndpointSlice) {
    metadata(&mut slice.metadata);
    for endpoint in slice.endpoints.iter_mut().flatten() {
        endpoint.target_ref = None;
        endpoint.node_name = None;
        endpoint.zone = None;
        endpoint.hints = None;
        endpoint.deprecated_topology = None;
        endpoint.hostname = None;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_slice_keeps_addresses_conditions_ports_and_its_service_label() {
        let mut s: EndpointSlice = serde_json::from_value(json!({
            "metadata": {
                "name": "web-abc", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                "labels": { "kubernetes.io/service-name": "web" },
                "annotations": { "endpoints.kubernetes.io/last-change-trigger-time": "now" },
                "ownerReferences": [{ "apiVersion": "v1", "kind": "Service", "name": "web", "uid": "u0" }],
                "managedFields": [{ "manager": "kube-controller-manager", "operation": "Update" }],
            },
            "addressType": "IPv4",
            "endpoints": [{
                "addresses": ["10.0.0.1"],
                "conditions": { "ready": true, "serving": true, "terminating": false },
                "targetRef": { "kind": "Pod", "name": "web-1", "namespace": "shop", "uid": "p1" },
                "nodeName": "node-1", "zone": "a", "hostname": "web-1",
                "hints": { "forZones": [{ "name": "a" }] },
            }],
            "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
        }))
        .unwrap();
        slice(&mut s);
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": "web-abc", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                    "labels": { "kubernetes.io/service-name": "web" },
                },
                "addressType": "IPv4",
                "endpoints": [{
                    "addresses": ["10.0.0.1"],
                    "conditions": { "ready": true, "serving": true, "terminating": false },
                }],
                "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
            })
        );
    }

    #[test]
    fn a_pool_keeps_labels_generation_spec_and_status_but_not_the_last_applied_copy() {
        let mut lbp: LoadBalancerPool = serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "LoadBalancerPool",
            "metadata": {
                "name": "web", "namespace": "shop", "generation": 3, "uid": "u1",
                "labels": { "tier": "edge" },
                "annotations": { "kubectl.kubernetes.io/last-applied-configuration": "{...}" },
                "managedFields": [{ "manager": "kubectl", "operation": "Apply" }],
            },
            "spec": { "backends": [{ "address": "10.0.0.1:80" }] },
            "status": { "observedGeneration": 3 },
        }))
        .unwrap();
        let before = lbp.clone();
        pool(&mut lbp);
        assert_eq!(lbp.metadata.labels, before.metadata.labels);
        assert_eq!(lbp.metadata.generation, Some(3));
        assert_eq!(lbp.metadata.annotations, None);
        assert_eq!(lbp.metadata.managed_fields, None);
        assert_eq!(lbp.spec, before.spec);
        assert_eq!(lbp.status, before.status);
    }

    #[test]
    fn a_service_keeps_its_ports() {
        let mut s: Service = serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "shop",
                          "managedFields": [{ "manager": "kubectl" }] },
            "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] },
            "status": { "loadBalancer": {} },
        }))
        .unwrap();
        service(&mut s);
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": "web", "namespace": "shop" },
                "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] },
            })
        );
    }
}
