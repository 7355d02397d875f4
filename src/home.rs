//! The `$DVM_HOME` directory: dvm trusts what it finds there (compiled native code, runtimes,
//! signed cache entries, keys), so it refuses a home that someone else could change.

use std::path::Path;

use crate::error::Error;

/// Makes `home` if it is missing (owner-only), then checks that it is a directory owned by
/// this user that neither group nor others can write, as ssh checks its key files. A home
/// that fails is refused with [`Error::HomeNotPrivate`], which says how to fix it.
pub fn ensure_private(home: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};

        let metadata = match std::fs::metadata(home) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(home)
                    .map_err(|source| Error::Home {
                        path: home.to_path_buf(),
                        source,
                    })?;
                std::fs::metadata(home).map_err(|source| Error::Home {
                    path: home.to_path_buf(),
                    source,
                })?
            }
            Err(source) => {
                return Err(Error::Home {
                    path: home.to_path_buf(),
                    source,
                });
            }
        };
        let refuse = |problem: String| {
            Err(Error::HomeNotPrivate {
                path: home.to_path_buf(),
                problem,
            })
        };
        if !metadata.is_dir() {
            return refuse("is not a directory".into());
        }
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
                if mode & 0o002 != 0 { "everyone" } else { "its group" }
            ));
        }
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(home).map_err(|source| Error::Home {
            path: home.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}
