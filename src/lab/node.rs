//! TODO(lead): node
