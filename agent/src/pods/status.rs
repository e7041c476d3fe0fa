//! Container and pod status as kubectl shows it: states with reasons, restart counts, phase and conditions.
use k8s_openapi::{
    api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use serde::{Deserialize, Serialize};

/// The state of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        signal: Option<i32>,
        reason: String,
        message: String,
        started_at: String,
        finished_at: String,
    },
}

impl State {
    pub fn waiting(reason: &str, message: impl Into<String>) -> Self {
        Self::Waiting {
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running { .. })
    }

    /// The exit code of a terminated state.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Self::Terminated { exit_code, .. } => Some(*exit_code),
            _ => None,
        }
    }

    pub fn to_k8s(&self) -> ContainerState {
        let time = |s: &str| s.parse().ok().map(Time);
        match self {
            Self::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: (!message.is_empty()).then(|| message.clone()),
                }),
                ..Default::default()
            },
            Self::Running { started_at } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time(started_at),
                }),
                ..Default::default()
            },
            Self::Terminated {
                exit_code,
                signal,
                reason,
                message,
                started_at,
                finished_at,
            } => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *exit_code,
                    signal: *signal,
                    reason: Some(reason.clone()),
                    message: (!message.is_empty()).then(|| message.clone()),
                    started_at: time(started_at),
                    finished_at: time(finished_at),
                    container_id: None,
                }),
                ..Default::default()
            },
        }
    }
}

/// Reason of a terminated container, as the kubelet reports it.
pub fn exit_reason(exit_code: i32) -> &'static str {
    if exit_code == 0 { "Completed" } else { "Error" }
}

/// One container's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last_state: Option<State>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
}

impl ContainerView {
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            state: State::waiting("ContainerCreating", ""),
            last_state: None,
            restart_count: 0,
            ready: false,
            started: false,
        }
    }

    pub fn to_k8s(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: String::new(),
            state: Some(self.state.to_k8s()),
            last_state: Some(self.last_state.as_ref().map(State::to_k8s).unwrap_or_default()),
            restart_count: self.restart_count,
            ready: self.ready,
            started: Some(self.started),
            ..Default::default()
        }
    }
}

/// Pod phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }
}

/// A pod's runtime status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodView {
    pub phase: Phase,
    pub initialized: bool,
    pub init_containers: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
}

impl PodView {
    /// Ready condition: initialized, running, every container ready.
    pub fn ready(&self) -> bool {
        self.phase == Phase::Running && self.initialized && self.containers.iter().all(|c| c.ready)
    }

    pub fn container(&self, name: &str) -> Option<&ContainerView> {
        self.init_containers
            .iter()
            .chain(&self.containers)
            .find(|c| c.name == name)
    }
}

/// The phase from container states. `restarting` says whether a terminated container will be started again.
pub fn phase(initialized: bool, init_failed: bool, containers: &[(State, bool)]) -> Phase {
    if init_failed {
        return Phase::Failed;
    }
    if !initialized {
        return Phase::Pending;
    }
    let any_running = containers.iter().any(|(s, _)| s.is_running());
    let all_final = containers
        .iter()
        .all(|(s, restarting)| s.exit_code().is_some() && !restarting);
    if all_final && !containers.is_empty() {
        if containers.iter().all(|(s, _)| s.exit_code() == Some(0)) {
            Phase::Succeeded
        } else {
            Phase::Failed
        }
    } else if any_running || containers.iter().any(|(s, r)| *r || s.exit_code().is_some()) {
        Phase::Running
    } else {
        Phase::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(code: i32) -> State {
        State::Terminated {
            exit_code: code,
            signal: None,
            reason: exit_reason(code).into(),
            message: String::new(),
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: "2026-01-01T00:00:01Z".into(),
        }
    }

    fn running() -> State {
        State::Running {
            started_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn phases() {
        assert_eq!(phase(false, false, &[(running(), false)]), Phase::Pending);
        assert_eq!(phase(false, true, &[]), Phase::Failed);
        assert_eq!(
            phase(true, false, &[(State::waiting("ContainerCreating", ""), false)]),
            Phase::Pending
        );
        assert_eq!(
            phase(true, false, &[(running(), false), (term(0), false)]),
            Phase::Running
        );
        assert_eq!(phase(true, false, &[(term(1), true)]), Phase::Running);
        assert_eq!(
            phase(true, false, &[(term(0), false), (term(0), false)]),
            Phase::Succeeded
        );
        assert_eq!(
            phase(true, false, &[(term(0), false), (term(2), false)]),
            Phase::Failed
        );
    }

    #[test]
    fn k8s_status_carries_reasons_and_times() {
        let mut v = ContainerView::new("c", "agnhost");
        v.state = State::waiting("CrashLoopBackOff", "back-off 10s restarting failed container=c");
        v.last_state = Some(term(3));
        v.restart_count = 2;
        let s = v.to_k8s();
        assert_eq!(
            s.state.unwrap().waiting.unwrap().reason.as_deref(),
            Some("CrashLoopBackOff")
        );
        let last = s.last_state.unwrap().terminated.unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
        assert!(last.finished_at.is_some());
        assert_eq!(s.restart_count, 2);
    }
}
