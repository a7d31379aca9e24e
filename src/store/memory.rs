//! The embedded, single-process store.
use super::*;
