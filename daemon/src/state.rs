//! The zone lifecycle: one enum (the API's `ZoneState`) and one explicit transition table.
//!
//! ```text
//! Pending -> Preparing -> Creating -> Starting -> Running -> Stopping -> Exited
//!                                     Starting/Running ----------------> Exited
//! every state before Exited --------> Failed        (with a reason)
//! every state but Destroyed ---------> Destroying -> Destroyed
//! Destroying ------------------------> Failed        (teardown failed; destroy again)
//! ```

use spore_api::v1::ZoneState;

/// All states, in lifecycle order (for exhaustive tests and counts).
pub const ALL_STATES: [ZoneState; 10] = [
    ZoneState::Pending,
    ZoneState::Preparing,
    ZoneState::Creating,
    ZoneState::Starting,
    ZoneState::Running,
    ZoneState::Stopping,
    ZoneState::Exited,
    ZoneState::Destroying,
    ZoneState::Destroyed,
    ZoneState::Failed,
];

/// Whether a zone may go from `from` to `to`.
pub fn can_transition(from: ZoneState, to: ZoneState) -> bool {
    use ZoneState::*;
    match (from, to) {
        (Pending, Preparing) => true,
        (Preparing, Creating) => true,
        (Creating, Starting) => true,
        (Starting, Running) => true,
        // A workload can end before, while or after the guest says it started it.
        (Starting | Running | Stopping, Exited) => true,
        (Starting | Running, Stopping) => true,
        (Pending | Preparing | Creating | Starting | Running | Stopping, Failed) => true,
        (
            Pending | Preparing | Creating | Starting | Running | Stopping | Exited | Failed,
            Destroying,
        ) => true,
        (Destroying, Destroyed | Failed) => true,
        _ => false,
    }
}

/// Whether the zone's VM may exist in this state (so destroy must go through the backend).
pub fn may_have_vm(state: ZoneState) -> bool {
    matches!(
        state,
        ZoneState::Creating
            | ZoneState::Starting
            | ZoneState::Running
            | ZoneState::Stopping
            | ZoneState::Exited
            | ZoneState::Failed
            | ZoneState::Destroying
    )
}

/// The lower-case name used in messages and tables.
pub fn name(state: ZoneState) -> &'static str {
    match state {
        ZoneState::Unspecified => "unspecified",
        ZoneState::Pending => "pending",
        ZoneState::Preparing => "preparing",
        ZoneState::Creating => "creating",
        ZoneState::Starting => "starting",
        ZoneState::Running => "running",
        ZoneState::Stopping => "stopping",
        ZoneState::Exited => "exited",
        ZoneState::Destroying => "destroying",
        ZoneState::Destroyed => "destroyed",
        ZoneState::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ZoneState::*;

    /// The table spelled out pair by pair: every (from, to) not listed must be refused.
    const ALLOWED: &[(ZoneState, ZoneState)] = &[
        (Pending, Preparing),
        (Pending, Failed),
        (Pending, Destroying),
        (Preparing, Creating),
        (Preparing, Failed),
        (Preparing, Destroying),
        (Creating, Starting),
        (Creating, Failed),
        (Creating, Destroying),
        (Starting, Running),
        (Starting, Stopping),
        (Starting, Exited),
        (Starting, Failed),
        (Starting, Destroying),
        (Running, Stopping),
        (Running, Exited),
        (Running, Failed),
        (Running, Destroying),
        (Stopping, Exited),
        (Stopping, Failed),
        (Stopping, Destroying),
        (Exited, Destroying),
        (Failed, Destroying),
        (Destroying, Destroyed),
        (Destroying, Failed),
    ];

    #[test]
    fn transition_table_is_exactly_the_documented_one() {
        let mut states = ALL_STATES.to_vec();
        states.push(Unspecified);
        for &from in &states {
            for &to in &states {
                assert_eq!(
                    can_transition(from, to),
                    ALLOWED.contains(&(from, to)),
                    "{} -> {}",
                    name(from),
                    name(to)
                );
            }
        }
    }

    #[test]
    fn destroyed_is_final_and_every_other_state_can_be_destroyed() {
        for &state in &ALL_STATES {
            assert!(!can_transition(Destroyed, state));
            if state != Destroyed && state != Destroying {
                assert!(can_transition(state, Destroying), "{}", name(state));
            }
        }
    }

    #[test]
    fn every_state_is_reachable_from_pending() {
        let mut reached = vec![Pending];
        let mut i = 0;
        while i < reached.len() {
            for &to in &ALL_STATES {
                if can_transition(reached[i], to) && !reached.contains(&to) {
                    reached.push(to);
                }
            }
            i += 1;
        }
        assert_eq!(reached.len(), ALL_STATES.len());
    }
}
