//! TODO(lead): status
