//! The `$DVM_HOME` directory: dvm trusts what it finds there (compiled native code, runtimes,
//! signed cache entries, keys), so it refuses a home that someone else could change.

use std::path::Path;

use crate::error::Error;

/// Makes `home` if it is missing (owner-only), then checks that the directory is owned by this
/// user and that neither group nor others can write it, as ssh checks its key files. A home
/// that fails is refused with [`Error::HomeNotPrivate`], which says how to fix it. A home that
/// cannot be made or is not a directory is left to degrade as before: nothing is read from it
/// and every cache write there fails with a warning.
pub fn ensure_private(home: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};

        let metadata = match std::fs::metadata(home) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                // A home that cannot be made degrades to compiling in memory later, with a
                // warning where the write fails; only a home that exists can be someone else's.
                let made = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(home);
                match made.and_then(|()| std::fs::metadata(home)) {
                    Ok(metadata) => metadata,
                    Err(_) => return Ok(()),
                }
            }
            // Unreadable or not a directory: nothing can be loaded from it, and every write
            // there fails and degrades the same way.
            Err(_) => return Ok(()),
        };
        if !metadata.is_dir() {
            return Ok(());
        }
        let refuse = |problem: String| {
            Err(Error::HomeNotPrivate {
                path: home.to_path_buf(),
                problem,
            })
        };
        let me = rustix::process::geteuid().as_raw();
        if metadata.uid() != me {
            return refuse(format!(
                "is owned by user id {}, not by you (user id {me})",
                metadata.uid()
            ));
        }
        let mode = metadata.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return refuse(format!(
                "can be written by {} (mode {mode:o})",
                if mode & 0o002 != 0 {
                    "everyone"
                } else {
                    "its group"
                }
            ));
        }
    }
    #[cfg(not(unix))]
    {
        // Ownership and modes are not checked here; a home that cannot be made degrades.
        let _ = std::fs::create_dir_all(home);
    }
    Ok(())
}
