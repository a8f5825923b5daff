//! The SSH transport: one `openssh` multiplexed master connection per node.

use super::{CommandOutput, NodeTransport, SshTarget, TransportError};

/// A live connection to one node; every command of a run goes through it.
pub struct SshSession {
    target: SshTarget,
    session: openssh::Session,
}

impl SshSession {
    /// Connects (one master connection), checking the host key as the target says.
    pub async fn connect(target: SshTarget) -> Result<SshSession, TransportError> {
        let _ = target;
        todo!("helper A")
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Closes the master connection.
    pub async fn close(self) -> Result<(), TransportError> {
        let _ = self.session;
        todo!("helper A")
    }
}

impl NodeTransport for SshSession {
    fn node(&self) -> &str {
        &self.target.node
    }

    async fn run(&self, script: &str) -> Result<CommandOutput, TransportError> {
        let _ = script;
        todo!("helper A")
    }
}
