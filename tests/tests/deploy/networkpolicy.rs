//! The NetworkPolicies: only Weir's pods reach the channel, the admin ports stay private.

use serde_json::Value;

use crate::TestResult;
use crate::support::{CHANNEL_PORT, array, installs, named_port, namespace, selects};

/// The admin ports that must stay private, and the proxy port that anyone may reach.
const DATAPLANE_ADMIN_PORT: u64 = 9901;
const CONTROLLER_METRICS_PORT: u64 = 9902;
const PROXY_PORT: u64 = 8080;

/// The NetworkPolicies: only data-plane pods (and the controller's replicas, which relay
/// reports to the Lease holder) reach the channel, no pod reaches the admin ports
/// (9901, 9902) unless a metrics peer is named explicitly, and anyone reaches the proxy port.
#[test]
fn network_policies_let_only_weir_pods_reach_the_channel_and_keep_admin_ports_private() -> TestResult
{
    for install in installs()? {
        let dataplane = install.pod_labels("dataplane");
        // Controller replicas relay data planes' reports to the Lease holder's channel.
        let controller = install.pod_labels("controller");
        let admitted = |component: &str, port: u64| -> Vec<Option<Vec<Value>>> {
            let pod = install.pod(component);
            let labels = install.pod_labels(component);
            let policies: Vec<_> = install
                .of_kinds(&["NetworkPolicy"])
                .into_iter()
                .filter(|p| namespace(p) == install.namespace)
                .filter(|p| selects(&p["spec"]["podSelector"]["matchLabels"], &labels))
                .collect();
            assert!(
                policies.iter().any(|p| array(&p["spec"]["policyTypes"])
                    .iter()
                    .any(|t| t == "Ingress")),
                "{}: no ingress policy selects the {component} pods",
                install.name
            );
            let container = &pod["containers"][0];
            policies
                .iter()
                .flat_map(|p| array(&p["spec"]["ingress"]))
                .filter(|rule| rule_admits_port(rule, container, port))
                .map(|rule| rule.get("from").map(|from| array(from).to_vec()))
                .collect()
        };

        let channel = admitted("controller", CHANNEL_PORT);
        assert!(
            !channel.is_empty(),
            "{}: the channel is closed",
            install.name
        );
        for from in &channel {
            let peers = from
                .as_ref()
                .ok_or_else(|| format!("{}: the channel is open to every pod", install.name))?;
            for peer in peers {
                let ours = peer.get("namespaceSelector").is_none()
                    && peer.get("ipBlock").is_none()
                    && (selects(&peer["podSelector"]["matchLabels"], &dataplane)
                        || selects(&peer["podSelector"]["matchLabels"], &controller));
                let sidecars = install.everything_on
                    && peer["namespaceSelector"].is_object()
                    && peer["podSelector"].is_object();
                assert!(
                    ours || sidecars,
                    "{}: the channel admits {peer}",
                    install.name
                );
            }
        }

        for (component, port) in [
            ("controller", CONTROLLER_METRICS_PORT),
            ("dataplane", DATAPLANE_ADMIN_PORT),
        ] {
            for from in admitted(component, port) {
                let explicit = install.everything_on
                    && from.as_ref().is_some_and(|peers| {
                        !peers.is_empty()
                            && peers.iter().all(|p| p["namespaceSelector"].is_object())
                    });
                assert!(
                    explicit,
                    "{}: {component} admin port {port} admits {}",
                    install.name,
                    from.map_or_else(|| "every source".to_owned(), |p| Value::from(p).to_string())
                );
            }
        }

        let proxy = admitted("dataplane", PROXY_PORT);
        assert!(
            proxy.iter().any(Option::is_none),
            "{}: the proxy port must take traffic from anyone: {proxy:?}",
            install.name
        );
    }
    Ok(())
}

/// Whether an ingress rule's ports take `port` of `container` (no `ports`: every port).
fn rule_admits_port(rule: &Value, container: &Value, port: u64) -> bool {
    let Some(ports) = rule.get("ports") else {
        return true;
    };
    array(ports).iter().any(|p| match &p["port"] {
        Value::Number(n) => n.as_u64() == Some(port),
        Value::String(named) => named_port(container, named) == Some(port),
        _ => true,
    })
}
