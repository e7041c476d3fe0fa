//! A pod's status as the apiserver gets it: phase, IPs, conditions and container statuses from the runtime's view
//! (pure).
use std::net::Ipv4Addr;

use k8s_openapi::{
    api::core::v1::{HostIP, PodCondition, PodIP, PodStatus},
    apimachinery::pkg::apis::meta::v1::Time,
};

use crate::pods::status::{Phase, PodView};

/// Facts about the pod's placement.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub host_ip: Ipv4Addr,
    pub pod_ip: Option<Ipv4Addr>,
    pub start_time: Time,
}

fn cond(
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    prev: &[PodCondition],
    now: &Time,
) -> PodCondition {
    let status = if ok { "True" } else { "False" }.to_string();
    let since = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    PodCondition {
        type_: type_.into(),
        status,
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(since),
        ..Default::default()
    }
}

/// The pod conditions kubectl shows, keeping the transition times of unchanged ones from `prev`.
pub fn conditions(view: &PodView, networked: bool, prev: &[PodCondition], now: &Time) -> Vec<PodCondition> {
    let done = matches!(view.phase, Phase::Succeeded | Phase::Failed);
    let unready: Vec<&str> = view
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let uninit: Vec<&str> = view
        .init_containers
        .iter()
        .filter(|c| c.state.exit_code() != Some(0))
        .map(|c| c.name.as_str())
        .collect();
    let list = |names: &[&str]| format!("[{}]", names.join(" "));
    let containers_ready = unready.is_empty() && !view.containers.is_empty();
    let (reason, message) = match (done, containers_ready) {
        (true, _) => (Some("PodCompleted"), None),
        (false, true) => (None, None),
        (false, false) => (
            Some("ContainersNotReady"),
            Some(format!("containers with unready status: {}", list(&unready))),
        ),
    };
    let ready = view.ready();
    vec![
        cond("PodReadyToStartContainers", networked, None, None, prev, now),
        if view.initialized {
            cond(
                "Initialized",
                true,
                done.then_some("PodCompleted"),
                None,
                prev,
                now,
            )
        } else {
            cond(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!("containers with incomplete status: {}", list(&uninit))),
                prev,
                now,
            )
        },
        cond(
            "Ready",
            ready,
            if ready { None } else { reason },
            if ready { None } else { message.clone() },
            prev,
            now,
        ),
        cond(
            "ContainersReady",
            containers_ready && !done,
            reason,
            message,
            prev,
            now,
        ),
        cond("PodScheduled", true, None, None, prev, now),
    ]
}

/// The whole status.
pub fn pod_status(view: &PodView, at: &Placement, prev: &[PodCondition], now: &Time) -> PodStatus {
    PodStatus {
        phase: Some(view.phase.as_str().into()),
        conditions: Some(conditions(view, at.pod_ip.is_some(), prev, now)),
        host_ip: Some(at.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: at.host_ip.to_string(),
        }]),
        pod_ip: at.pod_ip.map(|ip| ip.to_string()),
        pod_ips: at.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        start_time: Some(at.start_time.clone()),
        container_statuses: Some(view.containers.iter().map(|c| c.to_k8s()).collect()),
        init_container_statuses: (!view.init_containers.is_empty())
            .then(|| view.init_containers.iter().map(|c| c.to_k8s()).collect()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::status::{ContainerView, State};

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn running(name: &str, ready: bool) -> ContainerView {
        let mut c = ContainerView::new(name, "agnhost");
        c.state = State::Running {
            started_at: "2026-01-01T00:00:00Z".into(),
        };
        c.ready = ready;
        c.started = true;
        c
    }

    fn view(containers: Vec<ContainerView>) -> PodView {
        PodView {
            phase: Phase::Running,
            initialized: true,
            init_containers: vec![],
            containers,
        }
    }

    fn at() -> Placement {
        Placement {
            host_ip: "10.99.0.11".parse().unwrap(),
            pod_ip: Some("10.244.1.5".parse().unwrap()),
            start_time: t("2026-01-01T00:00:00Z"),
        }
    }

    fn get<'a>(cs: &'a [PodCondition], ty: &str) -> &'a PodCondition {
        cs.iter().find(|c| c.type_ == ty).unwrap()
    }

    #[test]
    fn readiness_of_every_container_makes_the_pod_ready() {
        let now = t("2026-01-01T00:00:05Z");
        let s = pod_status(
            &view(vec![running("a", true), running("b", false)]),
            &at(),
            &[],
            &now,
        );
        let cs = s.conditions.clone().unwrap();
        assert_eq!(get(&cs, "Ready").status, "False");
        assert_eq!(
            get(&cs, "ContainersReady").message.as_deref(),
            Some("containers with unready status: [b]")
        );
        assert_eq!(get(&cs, "Initialized").status, "True");
        assert_eq!(get(&cs, "PodScheduled").status, "True");
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.1.5"));
        assert_eq!(s.pod_ips.unwrap()[0].ip, "10.244.1.5");
        assert_eq!(s.host_ip.as_deref(), Some("10.99.0.11"));
        assert_eq!(s.container_statuses.unwrap().len(), 2);
        assert!(s.init_container_statuses.is_none());

        let later = t("2026-01-01T00:00:09Z");
        let s2 = pod_status(
            &view(vec![running("a", true), running("b", true)]),
            &at(),
            &cs,
            &later,
        );
        let cs2 = s2.conditions.unwrap();
        assert_eq!(get(&cs2, "Ready").status, "True");
        assert_eq!(get(&cs2, "Ready").last_transition_time, Some(later));
        assert_eq!(
            get(&cs2, "PodScheduled").last_transition_time,
            Some(now),
            "unchanged conditions keep their transition time"
        );
    }

    #[test]
    fn pending_init_and_completed_pods() {
        let now = t("2026-01-01T00:00:05Z");
        let mut v = view(vec![ContainerView::new("main", "busybox")]);
        v.phase = Phase::Pending;
        v.initialized = false;
        v.init_containers = vec![ContainerView::new("setup", "busybox")];
        let cs = conditions(&v, false, &[], &now);
        assert_eq!(
            get(&cs, "Initialized").reason.as_deref(),
            Some("ContainersNotInitialized")
        );
        assert_eq!(get(&cs, "PodReadyToStartContainers").status, "False");

        let mut done = view(vec![ContainerView::new("main", "busybox")]);
        done.phase = Phase::Succeeded;
        done.containers[0].state = State::Terminated {
            exit_code: 0,
            signal: None,
            reason: "Completed".into(),
            message: String::new(),
            started_at: String::new(),
            finished_at: String::new(),
        };
        let cs = conditions(&done, true, &[], &now);
        assert_eq!(get(&cs, "Ready").reason.as_deref(), Some("PodCompleted"));
        assert_eq!(get(&cs, "ContainersReady").status, "False");
    }
}
