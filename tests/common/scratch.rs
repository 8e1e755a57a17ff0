//! The scratch directory shared by the integration tests (through
//! `common`) and the crash model (which the fuzz targets include too, so it
//! must depend on nothing that exists only for integration tests).

use std::path::Path;

/// A scratch directory on tmpfs when the machine has one: sweeps that open
/// a database thousands of times would otherwise spend their time in fsync.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}
