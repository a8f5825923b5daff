//! ConfigMap steps: one key replaced at the resourceVersion the plan observed; on a conflict
//! the ConfigMap is read again and the replace tried again only while the key still holds
//! what was planned from (anything else is drift). The old content is journaled first, so a
//! rollback puts it back, but only over what hactl wrote.

use super::driver::{CONFLICT_RETRIES, Ctx, Sink, StepError};
use super::journal::{ConfigMapBefore, Record, StepState};
use crate::plan::{Operation, sha256};
use crate::seams::{Clock, ClusterApi, NodeOps, SeamError, Signer};

impl<N: NodeOps, C: ClusterApi, K: Clock, S: Signer, J: Sink> Ctx<'_, N, C, K, S, J> {
    pub(super) async fn configmap_step(
        &mut self,
        step: &str,
        op: &Operation,
    ) -> Result<(), StepError> {
        let ctx = self;
        let Operation::ReplaceConfigMapKey {
            namespace,
            name,
            key,
            resource_version,
            observed_sha256,
            content,
        } = op
        else {
            return Err(StepError::Failed(format!(
                "{step}: not a ConfigMap operation"
            )));
        };
        let what = format!("ConfigMap {namespace}/{name}, key {key}");
        let new_sha = sha256(content.as_bytes());
        let mut rv = resource_version.clone();
        let mut journaled = false;
        for attempt in 0..=CONFLICT_RETRIES {
            let cm = ctx.seams.api.get_configmap(namespace, name).await?;
            let current = cm
                .data
                .get(key)
                .ok_or_else(|| StepError::Failed(format!("{what} is gone since the plan")))?;
            if sha256(current.as_bytes()) != *observed_sha256 {
                if journaled && sha256(current.as_bytes()) == new_sha {
                    // An earlier try landed though its answer was lost.
                    break;
                }
                return Err(StepError::Failed(format!(
                    "{what} changed since the plan (planned from {observed_sha256}, now {}); run `hactl plan` again",
                    sha256(current.as_bytes())
                )));
            }
            if attempt > 0 {
                rv = cm.resource_version.clone();
            }
            if !journaled {
                ctx.record(Record::ConfigMapBefore {
                    step: step.to_string(),
                    namespace: namespace.clone(),
                    name: name.clone(),
                    key: key.clone(),
                    old_content: current.clone(),
                    new_sha256: new_sha.clone(),
                })?;
                journaled = true;
            }
            let mut new = cm.clone();
            new.resource_version = rv.clone();
            new.data.insert(key.clone(), content.clone());
            match ctx.seams.api.replace_configmap(&new).await {
                Ok(_) => break,
                Err(SeamError::Conflict { .. }) if attempt < CONFLICT_RETRIES => continue,
                // Whether it landed is read back below, or on the next try.
                Err(SeamError::Transport(_) | SeamError::Timeout { .. })
                    if attempt < CONFLICT_RETRIES =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let after = ctx.seams.api.get_configmap(namespace, name).await?;
        match after.data.get(key) {
            Some(v) if *v == *content => Ok(()),
            _ => Err(StepError::Failed(format!(
                "{what} does not read back as what hactl wrote"
            ))),
        }
    }

    /// Puts the key's old content back if the key still holds what hactl wrote.
    pub(super) async fn configmap_undo(&mut self, state: &StepState) -> Result<(), StepError> {
        let ctx = self;
        let Some(ConfigMapBefore {
            namespace,
            name,
            key,
            old_content: old,
            new_sha256: new_sha,
        }) = &state.configmap
        else {
            return Ok(());
        };
        let what = format!("ConfigMap {namespace}/{name}, key {key}");
        for attempt in 0..=CONFLICT_RETRIES {
            let cm = ctx.seams.api.get_configmap(namespace, name).await?;
            let current = cm.data.get(key).cloned().unwrap_or_default();
            if current == *old {
                return Ok(());
            }
            if sha256(current.as_bytes()) != *new_sha {
                return Err(StepError::Failed(format!(
                    "{what} changed since hactl wrote it (now {}, hactl wrote {new_sha}): left as it is; its old content is in the journal",
                    sha256(current.as_bytes())
                )));
            }
            let mut back = cm.clone();
            back.data.insert(key.clone(), old.clone());
            match ctx.seams.api.replace_configmap(&back).await {
                Ok(_) => {}
                Err(
                    SeamError::Conflict { .. }
                    | SeamError::Transport(_)
                    | SeamError::Timeout { .. },
                ) if attempt < CONFLICT_RETRIES => {}
                Err(e) => return Err(e.into()),
            }
        }
        let cm = ctx.seams.api.get_configmap(namespace, name).await?;
        if cm.data.get(key) == Some(old) {
            Ok(())
        } else {
            Err(StepError::Failed(format!(
                "{what} could not be put back after {CONFLICT_RETRIES} tries"
            )))
        }
    }
}
