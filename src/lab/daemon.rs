//! TODO(lead): daemon
