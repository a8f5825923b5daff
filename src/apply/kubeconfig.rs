//! Kubeconfig steps: one `server:` rewritten in place (every other byte kept), atomically,
//! after a backup, refused when the file changed since the plan; and the undo every node-file
//! step shares: put the backup back only over what hactl wrote.

use super::driver::{Ctx, Sink, StepError};
use super::journal::{Record, StepState};
use crate::plan::Operation;
use crate::seams::{Clock, ClusterApi, FileState, NodeOps, Signer};

/// The file as the plan saw it, or why not.
pub(super) async fn read_as_planned<N: NodeOps>(
    node_ops: &N,
    node: &str,
    path: &str,
    observed: &str,
) -> Result<FileState, StepError> {
    let Some(file) = node_ops.read_file(node, path).await? else {
        return Err(StepError::Failed(format!(
            "{path} on {node} is gone since the plan; run `hactl plan` again"
        )));
    };
    let now = file.sha256();
    if now != observed {
        return Err(StepError::Failed(format!(
            "{path} on {node} changed since the plan (planned from {observed}, now {now}); run `hactl plan` again"
        )));
    }
    Ok(file)
}

impl<N: NodeOps, C: ClusterApi, K: Clock, S: Signer, J: Sink> Ctx<'_, N, C, K, S, J> {
    /// Backs `path` up, journals what it writes, writes `content` with the file's mode and owner,
    /// and reads it back.
    pub(super) async fn write_step(
        &mut self,
        step: &str,
        node: &str,
        path: &str,
        old: &FileState,
        content: Vec<u8>,
    ) -> Result<(), StepError> {
        let ctx = self;
        let run = ctx.run.clone();
        let backup = ctx.seams.node.backup(node, &run, path).await?;
        ctx.record(Record::BackedUp {
            step: step.to_string(),
            backup: backup.clone(),
        })?;
        if backup.sha256 != old.sha256() {
            return Err(StepError::Failed(format!(
                "{path} on {node} changed while it was backed up; run `hactl plan` again"
            )));
        }
        let new = FileState {
            content,
            mode: old.mode,
            uid: old.uid,
            gid: old.gid,
        };
        ctx.record(Record::Writing {
            step: step.to_string(),
            sha256: new.sha256(),
        })?;
        ctx.seams.node.write_file(node, path, &new).await?;
        match ctx.seams.node.read_file(node, path).await? {
            Some(f) if f == new => Ok(()),
            Some(f) => Err(StepError::Failed(format!(
                "{path} on {node} reads back as {} (mode {:o}), not what hactl wrote ({})",
                f.sha256(),
                f.mode,
                new.sha256()
            ))),
            None => Err(StepError::Failed(format!(
                "{path} on {node} is gone right after hactl wrote it"
            ))),
        }
    }

    pub(super) async fn kubeconfig_step(
        &mut self,
        step: &str,
        op: &Operation,
    ) -> Result<(), StepError> {
        let ctx = self;
        let Operation::SetKubeconfigServer {
            node,
            path,
            cluster,
            from,
            to,
            observed_sha256,
        } = op
        else {
            return Err(StepError::Failed(format!(
                "{step}: not a kubeconfig operation"
            )));
        };
        let file = read_as_planned(ctx.seams.node, node, path, observed_sha256).await?;
        let text = String::from_utf8(file.content.clone())
            .map_err(|_| StepError::Failed(format!("{path} on {node} is not UTF-8")))?;
        let current = crate::kubeconfig::current_server(&text)
            .map_err(|e| StepError::Failed(format!("{path} on {node}: {e}")))?;
        if current.cluster != *cluster || current.server != *from {
            return Err(StepError::Failed(format!(
                "{path} on {node}: cluster {:?} has server {}, the plan expected {cluster:?} at {from}; run `hactl plan` again",
                current.cluster, current.server
            )));
        }
        let new = crate::kubeconfig::set_server(&text, to)
            .map_err(|e| StepError::Failed(format!("{path} on {node}: {e}")))?;
        ctx.write_step(step, node, path, &file, new.into_bytes())
            .await
    }

    /// Undoes a node-file step from its journal state: nothing when the file still has the
    /// backup's hash, the backup put back when it has hactl's, refused (and said) otherwise.
    pub(super) async fn file_undo(&mut self, state: &StepState) -> Result<(), StepError> {
        let ctx = self;
        // No backup: the step stopped before it could change anything.
        let Some(b) = &state.backup else {
            return Ok(());
        };
        let (node, path) = (b.node.as_str(), b.path.as_str());
        let now = ctx.seams.node.read_file(node, path).await?;
        let now_sha = now.as_ref().map(FileState::sha256);
        if now_sha.as_deref() == Some(b.sha256.as_str())
            && now
                .as_ref()
                .is_some_and(|f| (f.mode, f.uid, f.gid) == (b.mode, b.uid, b.gid))
        {
            return Ok(());
        }
        if now_sha.is_none() || now_sha != state.writing {
            return Err(StepError::Failed(format!(
                "{path} on {node} changed since hactl wrote it (now {}, hactl wrote {}): left as it is; its backup is {}",
                now_sha.as_deref().unwrap_or("absent"),
                state.writing.as_deref().unwrap_or("nothing"),
                b.backup_path
            )));
        }
        ctx.seams.node.restore(b).await?;
        match ctx.seams.node.read_file(node, path).await? {
            Some(f)
                if f.sha256() == b.sha256 && (f.mode, f.uid, f.gid) == (b.mode, b.uid, b.gid) =>
            {
                Ok(())
            }
            _ => Err(StepError::Failed(format!(
                "{path} on {node} does not read back as its backup ({}) after the restore",
                b.sha256
            ))),
        }
    }
}
