//! What the caches of pools and Services keep of each object: only what compiling pools,
//! mapping changes back to pools and writing status read; `managedFields` and kubectl's
//! last-applied copy of the whole object are often most of an object's bytes. client-go's
//! informers offer the same through transform functions. (EndpointSlices are kept in a
//! compact form of their own: [`endpoints`](crate::endpoints).)
//!
//! Applied to every watched object before the reflectors store it, so nothing downstream can
//! come to depend on a dropped field unnoticed: the unit tests list what is kept.

use k8s_openapi::api::core::v1::Service;
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
