//! A VM's life as a pure state machine: what the controller does on each
//! event, testable without processes.

use serde::{Deserialize, Serialize};

use crate::policy::OnBackendDeath;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Stopped,
    Starting,
    Running,
    /// A child died; the service is recovering (or about to stop the VM).
    Degraded,
    Stopping,
    /// The last boot or run ended in an error; `start` tries again.
    Failed,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Stopped => "stopped",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Degraded => "degraded",
            VmState::Stopping => "stopping",
            VmState::Failed => "failed",
        }
    }

    /// Whether the VM has processes (so `stop` has work to do).
    pub fn is_up(self) -> bool {
        matches!(self, VmState::Starting | VmState::Running | VmState::Degraded)
    }
}

/// Which kind of child an exit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    Vmm,
    /// virtiofsd or rayos-vsock: the VM's devices depend on it.
    Backend,
    /// The native-window bridge: restartable without the VM.
    Bridge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Start,
    Stop,
    AgentReady,
    /// The boot did not reach the agent (a backend did not listen, the
    /// agent did not answer in time).
    BootFailed,
    ChildExited {
        kind: ChildKind,
        clean: bool,
    },
    ChildRestarted,
    /// Every child is gone and the runtime folder removed.
    CleanedUp {
        failed: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start backends, the VMM, then wait for the agent.
    Boot,
    /// Ask the agent to power off, then SIGTERM, SIGKILL; then clean up.
    Shutdown,
    /// Stop what is left and clean up (the VM is already gone).
    Cleanup,
    /// Shut down, then boot again.
    RestartVm,
    RestartChild,
    None,
    /// The input makes no sense now; the string says why (for the API).
    Refuse(&'static str),
}

/// The next state and what to do.
pub fn step(state: VmState, input: &Input, on_backend_death: OnBackendDeath) -> (VmState, Action) {
    use Action as A;
    use VmState as S;
    match (state, input) {
        (S::Stopped | S::Failed, Input::Start) => (S::Starting, A::Boot),
        (S::Starting | S::Running | S::Degraded, Input::Start) => (state, A::Refuse("the VM is already running")),
        (S::Stopping, Input::Start) => (state, A::Refuse("the VM is stopping")),

        (S::Starting | S::Running | S::Degraded, Input::Stop) => (S::Stopping, A::Shutdown),
        (S::Stopping | S::Stopped | S::Failed, Input::Stop) => (state, A::None),

        (S::Starting, Input::AgentReady) => (S::Running, A::None),
        (S::Starting, Input::BootFailed) => (S::Stopping, A::Cleanup),

        // The VMM ending ends the VM: cleanly (the guest powered off) or not.
        (S::Starting | S::Running | S::Degraded, Input::ChildExited { kind: ChildKind::Vmm, .. }) => {
            (S::Stopping, A::Cleanup)
        }
        (S::Starting, Input::ChildExited { kind: ChildKind::Backend, .. }) => (S::Stopping, A::Cleanup),
        (S::Running | S::Degraded, Input::ChildExited { kind: ChildKind::Backend, .. }) => match on_backend_death {
            OnBackendDeath::RestartVm => (S::Degraded, A::RestartVm),
            OnBackendDeath::Stop => (S::Stopping, A::Shutdown),
        },
        (S::Running | S::Degraded, Input::ChildExited { kind: ChildKind::Bridge, .. }) => {
            (S::Degraded, A::RestartChild)
        }
        (S::Degraded, Input::ChildRestarted) => (S::Running, A::None),
        (S::Stopping, Input::CleanedUp { failed }) => (if *failed { S::Failed } else { S::Stopped }, A::None),

        // Late reports (an exit seen while stopping, a bridge exit during boot) change nothing.
        _ => (state, A::None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChildKind::*;
    use VmState::*;

    const R: OnBackendDeath = OnBackendDeath::RestartVm;

    fn run(mut s: VmState, inputs: &[Input], policy: OnBackendDeath) -> (VmState, Vec<Action>) {
        let mut actions = vec![];
        for i in inputs {
            let (n, a) = step(s, i, policy);
            s = n;
            actions.push(a);
        }
        (s, actions)
    }

    #[test]
    fn boot_run_and_clean_stop() {
        let (s, a) = run(
            Stopped,
            &[
                Input::Start,
                Input::AgentReady,
                Input::Stop,
                Input::ChildExited { kind: Vmm, clean: true },
                Input::CleanedUp { failed: false },
            ],
            R,
        );
        assert_eq!(s, Stopped);
        assert_eq!(a, [Action::Boot, Action::None, Action::Shutdown, Action::None, Action::None]);
    }

    #[test]
    fn a_guest_crash_fails_the_vm_and_start_tries_again() {
        let (s, a) =
            run(Running, &[Input::ChildExited { kind: Vmm, clean: false }, Input::CleanedUp { failed: true }], R);
        assert_eq!((s, &a[0]), (Failed, &Action::Cleanup));
        assert_eq!(step(Failed, &Input::Start, R), (Starting, Action::Boot));
    }

    #[test]
    fn a_dead_backend_restarts_the_vm_or_stops_it_by_policy() {
        assert_eq!(
            step(Running, &Input::ChildExited { kind: Backend, clean: false }, R),
            (Degraded, Action::RestartVm)
        );
        assert_eq!(
            step(Running, &Input::ChildExited { kind: Backend, clean: false }, OnBackendDeath::Stop),
            (Stopping, Action::Shutdown)
        );
        assert_eq!(step(Starting, &Input::ChildExited { kind: Backend, clean: false }, R), (Stopping, Action::Cleanup));
    }

    #[test]
    fn a_dead_bridge_is_restarted_alone() {
        let (s, a) = run(Running, &[Input::ChildExited { kind: Bridge, clean: false }, Input::ChildRestarted], R);
        assert_eq!(s, Running);
        assert_eq!(a, [Action::RestartChild, Action::None]);
    }

    #[test]
    fn a_hung_boot_is_cleaned_up_and_fails() {
        let (s, _) = run(Starting, &[Input::BootFailed, Input::CleanedUp { failed: true }], R);
        assert_eq!(s, Failed);
    }

    #[test]
    fn nonsense_is_refused_or_ignored() {
        assert!(matches!(step(Running, &Input::Start, R).1, Action::Refuse(_)));
        assert!(matches!(step(Stopping, &Input::Start, R).1, Action::Refuse(_)));
        assert_eq!(step(Stopped, &Input::Stop, R), (Stopped, Action::None));
        assert_eq!(step(Stopping, &Input::ChildExited { kind: Backend, clean: false }, R), (Stopping, Action::None));
        assert_eq!(step(Stopped, &Input::AgentReady, R), (Stopped, Action::None));
    }
}
