//! TODO(lead): up
