//! How the data planes and the controller find and trust each other, and how controller
//! replicas elect the one that writes status.

use serde_json::Value;

use crate::TestResult;
use crate::support::{
    CHANNEL_PORT, array, component, flag, flags, installs, kind, name, named_port, selects,
};

/// The data planes reach the controller by its Service's cluster DNS name on the channel port,
/// the Service exposes only that port, and the controller accepts the data planes'
/// ServiceAccount and no other by default.
#[test]
fn data_planes_find_the_controller_service_and_the_controller_trusts_their_service_account()
-> TestResult {
    for install in installs()? {
        let service = install
            .objects
            .iter()
            .find(|o| kind(o) == "Service" && component(o) == Some("controller"))
            .ok_or("no controller Service")?;
        let ports = array(&service["spec"]["ports"]);
        assert_eq!(ports.len(), 1, "{}: {ports:?}", install.name);
        assert_eq!(ports[0]["port"], CHANNEL_PORT);
        assert_eq!(ports[0]["targetPort"], "channel");
        assert!(selects(
            &service["spec"]["selector"],
            &install.pod_labels("controller")
        ));

        let dataplane = &install.pod("dataplane")["containers"][0];
        assert_eq!(
            flag(dataplane, "--controller"),
            Some(format!(
                "http://{}.{}.svc:{CHANNEL_PORT}",
                name(service),
                install.namespace
            )),
            "{}",
            install.name
        );
        let controller = &install.pod("controller")["containers"][0];
        let channel = named_port(controller, "channel");
        assert_eq!(channel, Some(CHANNEL_PORT), "{}", install.name);
        let allowed = flags(controller, "--allowed-service-account");
        assert_eq!(
            allowed.first(),
            Some(&format!(
                "{}:{}",
                install.namespace,
                install.service_account("dataplane")
            )),
            "{}",
            install.name
        );
        let extra = if install.everything_on { 1 } else { 0 };
        assert_eq!(allowed.len(), 1 + extra, "{}: {allowed:?}", install.name);
    }
    Ok(())
}

/// Leader election: the controller's replicas (two) hold the Lease in their own namespace,
/// under their pod name, and advertise their channel at their pod IP, all from the downward
/// API.
#[test]
fn controller_replicas_elect_a_leader_in_their_namespace_by_pod_name_and_pod_ip() -> TestResult {
    for install in installs()? {
        let deployment = install.deployment("controller");
        assert_eq!(deployment["spec"]["replicas"], 2, "{}", install.name);
        let container = &install.pod("controller")["containers"][0];
        let channel = named_port(container, "channel").ok_or("no channel port")?;
        for (flag_name, value, var, field) in [
            (
                "--lease-namespace",
                "$(POD_NAMESPACE)".to_owned(),
                "POD_NAMESPACE",
                "metadata.namespace",
            ),
            (
                "--identity",
                "$(POD_NAME)".to_owned(),
                "POD_NAME",
                "metadata.name",
            ),
            (
                "--advertise-url",
                format!("http://$(POD_IP):{channel}"),
                "POD_IP",
                "status.podIP",
            ),
        ] {
            assert_eq!(
                flag(container, flag_name),
                Some(value),
                "{}: {flag_name}",
                install.name
            );
            let from = array(&container["env"])
                .iter()
                .find(|e| e["name"] == var)
                .map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]);
            assert_eq!(from, Some(&Value::from(field)), "{}: {var}", install.name);
        }
    }
    Ok(())
}
