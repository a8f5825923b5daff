//! The plan as apply's steps: each change's operation, each handler right after the change it
//! runs after, in the plan's (topological) order. A plan apply cannot carry out is refused
//! here, before anything changes.

use crate::plan::{Action, Handler, Operation, Plan, ResourceChange};

/// One thing apply does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepAction {
    Change(Operation),
    Handler(Handler),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The resource address or the handler id: what the journal names.
    pub id: String,
    pub action: StepAction,
}

/// Why a plan cannot be applied as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepsError {
    #[error("the plan has errors ({0}); fix them and run `hactl plan` again")]
    Errors(String),
    #[error("{0} could not be decided when the plan was made; run `hactl plan` again")]
    Unknown(String),
    #[error(
        "{0} changes without an operation (a plan from an older hactl); run `hactl plan` again"
    )]
    NoOperation(String),
}

/// The steps of `plan`; control-plane joins are not steps of this engine (their changes are
/// returned for the caller to say so).
pub fn steps(plan: &Plan) -> Result<(Vec<Step>, Vec<&ResourceChange>), StepsError> {
    if plan.has_errors() {
        let subjects: Vec<&str> = plan
            .problems
            .iter()
            .filter(|p| p.severity == crate::plan::Severity::Error)
            .map(|p| p.subject.as_str())
            .collect();
        return Err(StepsError::Errors(subjects.join(", ")));
    }
    let mut out = Vec::new();
    let mut joins = Vec::new();
    for change in &plan.resource_changes {
        if change.actions.contains(&Action::Unknown) {
            return Err(StepsError::Unknown(change.address.clone()));
        }
        if change.address.starts_with("control_plane.") && change.is_change() {
            joins.push(change);
        } else if change.is_change() {
            let op = change
                .operation
                .clone()
                .ok_or_else(|| StepsError::NoOperation(change.address.clone()))?;
            out.push(Step {
                id: change.address.clone(),
                action: StepAction::Change(op),
            });
        }
        for h in plan
            .handlers
            .iter()
            .filter(|h| h.runs_after == change.address)
        {
            out.push(Step {
                id: h.id.clone(),
                action: StepAction::Handler(h.clone()),
            });
        }
    }
    Ok((out, joins))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(observed: &str) -> Plan {
        let desired =
            crate::spec::parse("plans/lab.toml", include_str!("../../plans/lab.toml")).unwrap();
        let observed = serde_json::from_str(observed).unwrap();
        crate::planner::plan(&desired, &observed).unwrap()
    }

    fn fresh() -> Plan {
        plan(include_str!(
            "../../tests/fixtures/observed/fresh-1.31.json"
        ))
    }

    #[test]
    fn each_handler_follows_the_change_it_runs_after_and_joins_are_left_out() {
        let p = fresh();
        let (steps, joins) = steps(&p).unwrap();
        let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids[..2],
            ["apiserver_cert.cp1", "handler.cp1.kube-apiserver"]
        );
        for (i, s) in steps.iter().enumerate() {
            if let StepAction::Handler(h) = &s.action {
                let after = ids.iter().position(|id| *id == h.runs_after).unwrap();
                assert!(after < i, "{} runs before {}", s.id, h.runs_after);
            }
        }
        let joins: Vec<&str> = joins.iter().map(|c| c.address.as_str()).collect();
        assert_eq!(joins, ["control_plane.cp2", "control_plane.cp3"]);
        assert_eq!(
            steps.len(),
            p.resource_changes
                .iter()
                .filter(|c| c.is_change() && c.operation.is_some())
                .count()
                + p.handlers.len()
        );
    }

    #[test]
    fn a_plan_with_errors_or_without_operations_is_refused() {
        let p = plan(include_str!(
            "../../tests/fixtures/observed/unreachable-worker-1.31.json"
        ));
        assert!(matches!(steps(&p), Err(StepsError::Errors(s)) if s.contains("w2")));
        let mut p = fresh();
        p.resource_changes[1].operation = None;
        let address = p.resource_changes[1].address.clone();
        assert_eq!(steps(&p), Err(StepsError::NoOperation(address)));
    }
}
