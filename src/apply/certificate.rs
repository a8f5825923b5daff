//! The API server certificate step: reissued for the key it has (the key file is never read),
//! with the plan's SANs, signed with the cluster CA (its key read into memory only), written
//! in place of the old one after a backup.

use super::driver::{Ctx, Sink, StepError};
use super::kubeconfig::read_as_planned;
use crate::plan::Operation;
use crate::seams::{CertRequest, Clock, ClusterApi, NodeOps, Signer};

impl<N: NodeOps, C: ClusterApi, K: Clock, S: Signer, J: Sink> Ctx<'_, N, C, K, S, J> {
    pub(super) async fn certificate_step(
        &mut self,
        step: &str,
        op: &Operation,
    ) -> Result<(), StepError> {
        let ctx = self;
        let Operation::ReissueApiserverCertificate {
            node,
            cert_path,
            ca_cert_path,
            ca_key_path,
            key_type,
            sans,
            observed_sha256,
            ..
        } = op
        else {
            return Err(StepError::Failed(format!(
                "{step}: not a certificate operation"
            )));
        };
        let cert = read_as_planned(ctx.seams.node, node, cert_path, observed_sha256).await?;
        let text = |f: crate::seams::FileState, path: &str| {
            String::from_utf8(f.content)
                .map_err(|_| StepError::Failed(format!("{path} on {node} is not PEM text")))
        };
        let missing = |path: &str| StepError::Failed(format!("{path} on {node} is missing"));
        let ca_cert = ctx
            .seams
            .node
            .read_file(node, ca_cert_path)
            .await?
            .ok_or_else(|| missing(ca_cert_path))?;
        let ca_key = ctx
            .seams
            .node
            .read_file(node, ca_key_path)
            .await?
            .ok_or_else(|| missing(ca_key_path))?;
        let request = CertRequest {
            cert_pem: text(cert.clone(), cert_path)?,
            sans: sans.clone(),
            key_type: *key_type,
            now: ctx.seams.clock.now(),
        };
        let pem = ctx.seams.signer.issue(
            &text(ca_cert, ca_cert_path)?,
            &text(ca_key, ca_key_path)?,
            &request,
        )?;
        ctx.write_step(step, node, cert_path, &cert, pem.into_bytes())
            .await
    }
}
