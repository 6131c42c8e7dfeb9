//! RBAC is least privilege: the controller's grants, its Lease Role, and a data plane with no
//! RBAC at all, only a projected channel token.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::TestResult;
use crate::support::{array, flag, installs, kind, name, namespace};

/// Verbs that only read; every other verb writes.
const READ_VERBS: [&str; 3] = ["get", "list", "watch"];

/// The audience of the data planes' channel tokens.
const AUDIENCE: &str = "weir-channel";

/// RBAC is least privilege: no `*` anywhere, nothing on Secrets, and the ClusterRole grants
/// exactly reads of pools, Services and EndpointSlices and writes of pool status, Events and
/// TokenReviews, nothing more.
#[test]
fn rbac_has_no_wildcard_no_secrets_and_writes_cluster_wide_only_status_events_and_token_reviews()
-> TestResult {
    let expected: BTreeSet<Grant> = [
        ("weir.dev", "loadbalancerpools", "get"),
        ("weir.dev", "loadbalancerpools", "list"),
        ("weir.dev", "loadbalancerpools", "watch"),
        ("weir.dev", "loadbalancerpools/status", "patch"),
        ("weir.dev", "loadbalancerpools/status", "update"),
        ("", "services", "get"),
        ("", "services", "list"),
        ("", "services", "watch"),
        ("discovery.k8s.io", "endpointslices", "get"),
        ("discovery.k8s.io", "endpointslices", "list"),
        ("discovery.k8s.io", "endpointslices", "watch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
        ("", "events", "create"),
        ("", "events", "patch"),
        ("authentication.k8s.io", "tokenreviews", "create"),
    ]
    .into_iter()
    .map(Grant::from)
    .collect();

    for install in installs()? {
        let roles = install.of_kinds(&["ClusterRole", "Role"]);
        assert!(!roles.is_empty(), "{}: no RBAC", install.name);
        for role in &roles {
            let what = format!("{}: {} {}", install.name, kind(role), name(role));
            assert!(role.get("aggregationRule").is_none(), "{what} aggregates");
            for rule in array(&role["rules"]) {
                assert!(rule.get("nonResourceURLs").is_none(), "{what}: {rule}");
                for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                    assert!(
                        !array(&rule[field]).iter().any(|v| v.as_str() == Some("*")),
                        "{what}: a wildcard in {field}: {rule}"
                    );
                }
                assert!(
                    !array(&rule["resources"])
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|r| r == "secrets" || r.starts_with("secrets/")),
                    "{what} grants secrets: {rule}"
                );
            }
        }
        let cluster_roles = install.of_kinds(&["ClusterRole"]);
        assert_eq!(cluster_roles.len(), 1, "{}: one ClusterRole", install.name);
        let granted = grants(cluster_roles[0]);
        let writes: Vec<_> = granted
            .iter()
            .filter(|g| !READ_VERBS.contains(&g.verb.as_str()))
            .collect();
        assert!(
            writes.iter().all(|g| expected.contains(g)),
            "{}: cluster-wide writes {writes:?}",
            install.name
        );
        assert_eq!(granted, expected, "{}: the ClusterRole", install.name);
    }
    Ok(())
}

/// Leader election needs Leases, and gets them only from a Role in the install namespace,
/// bound to the controller's ServiceAccount there.
#[test]
fn leases_are_granted_only_by_a_role_in_the_install_namespace() -> TestResult {
    let expected: BTreeSet<Grant> = ["get", "create", "update"]
        .into_iter()
        .map(|verb| Grant::from(("coordination.k8s.io", "leases", verb)))
        .collect();
    for install in installs()? {
        for role in install.of_kinds(&["ClusterRole"]) {
            assert!(
                !grants(role)
                    .iter()
                    .any(|g| g.resource.starts_with("leases")),
                "{}: leases cluster-wide",
                install.name
            );
        }
        let roles = install.of_kinds(&["Role"]);
        assert_eq!(roles.len(), 1, "{}: one Role", install.name);
        let role = roles[0];
        assert_eq!(namespace(role), install.namespace, "{}", install.name);
        assert_eq!(grants(role), expected, "{}: the Role", install.name);

        let controller = install.service_account("controller");
        let bindings = install.of_kinds(&["RoleBinding"]);
        assert_eq!(bindings.len(), 1, "{}: one RoleBinding", install.name);
        assert_eq!(namespace(bindings[0]), install.namespace);
        assert_eq!(bindings[0]["roleRef"]["kind"], "Role");
        assert_eq!(bindings[0]["roleRef"]["name"], name(role));
        assert_eq!(
            subjects(bindings[0]),
            [(install.namespace.clone(), controller.clone())]
        );
        let cluster_bindings = install.of_kinds(&["ClusterRoleBinding"]);
        assert_eq!(cluster_bindings.len(), 1, "{}", install.name);
        assert_eq!(
            subjects(cluster_bindings[0]),
            [(install.namespace.clone(), controller)]
        );
    }
    Ok(())
}

/// The data plane has no RBAC and no API token: its ServiceAccount is bound to nothing, the pod
/// does not mount the API token, and the only credential it has is a projected token for the
/// channel's audience, at the path `--token-file` names.
#[test]
fn the_data_plane_has_no_rbac_and_only_a_projected_channel_token() -> TestResult {
    for install in installs()? {
        let account = install.service_account("dataplane");
        for binding in install.of_kinds(&["RoleBinding", "ClusterRoleBinding"]) {
            assert!(
                !subjects(binding)
                    .iter()
                    .any(|(_, subject)| subject == &account),
                "{}: {} binds the data plane",
                install.name,
                name(binding)
            );
        }
        let pod = install.pod("dataplane");
        assert_eq!(
            pod["automountServiceAccountToken"], false,
            "{}",
            install.name
        );
        let container = &pod["containers"][0];
        let token_file = flag(container, "--token-file").ok_or("no --token-file")?;
        let (volume, path) = mounted_volume(pod, container, &token_file)
            .ok_or_else(|| format!("{}: {token_file} is not on a volume", install.name))?;
        let sources = array(&volume["projected"]["sources"]);
        assert_eq!(sources.len(), 1, "{}: {volume}", install.name);
        let token = &sources[0]["serviceAccountToken"];
        assert_eq!(token["path"], path, "{}", install.name);
        assert_eq!(token["audience"], AUDIENCE, "{}", install.name);
        assert!(
            token["expirationSeconds"]
                .as_u64()
                .is_some_and(|s| s <= 3600),
            "{}: short-lived: {token}",
            install.name
        );
        let controller = &install.pod("controller")["containers"][0];
        assert_eq!(
            flag(controller, "--token-audience").as_deref(),
            Some(AUDIENCE)
        );
    }
    Ok(())
}

/// One RBAC permission: API group, resource, verb.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    group: String,
    resource: String,
    verb: String,
}

impl From<(&str, &str, &str)> for Grant {
    fn from((group, resource, verb): (&str, &str, &str)) -> Self {
        Self {
            group: group.to_owned(),
            resource: resource.to_owned(),
            verb: verb.to_owned(),
        }
    }
}

/// Every (group, resource, verb) a role grants.
fn grants(role: &Value) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for rule in array(&role["rules"]) {
        for group in array(&rule["apiGroups"]) {
            for resource in array(&rule["resources"]) {
                for verb in array(&rule["verbs"]) {
                    grants.insert(Grant::from((
                        group.as_str().unwrap_or_default(),
                        resource.as_str().unwrap_or_default(),
                        verb.as_str().unwrap_or_default(),
                    )));
                }
            }
        }
    }
    grants
}

/// The ServiceAccounts a binding binds, as (namespace, name).
fn subjects(binding: &Value) -> Vec<(String, String)> {
    array(&binding["subjects"])
        .iter()
        .map(|s| {
            assert_eq!(s["kind"], "ServiceAccount", "{s}");
            let field = |f: &str| s[f].as_str().unwrap_or_default().to_owned();
            (field("namespace"), field("name"))
        })
        .collect()
}

/// The volume `file` is on, and the file's path inside it.
fn mounted_volume<'a>(
    pod: &'a Value,
    container: &Value,
    file: &str,
) -> Option<(&'a Value, String)> {
    array(&container["volumeMounts"]).iter().find_map(|mount| {
        let dir = mount["mountPath"].as_str()?;
        let path = file.strip_prefix(dir)?.strip_prefix('/')?;
        let volume = array(&pod["volumes"])
            .iter()
            .find(|v| v["name"] == mount["name"])?;
        Some((volume, path.to_owned()))
    })
}
