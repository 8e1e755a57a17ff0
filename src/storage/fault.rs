//! A fault-injecting storage (filled in by the crash-safety work).
