//! `$DVM_HOME` holds compiled native code that dvm loads: a home someone else can write is
//! refused, and a missing one is made private.

use std::os::unix::fs::PermissionsExt;

use crate::cli::dvm_command;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn home_writable_by_others_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    for (bits, who) in [(0o777, "everyone"), (0o770, "its group")] {
        let home = dir.path().join(format!("home-{bits:o}"));
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(bits)).unwrap();
        let error = dvm::Dvm::new(dvm::Config {
            home: home.clone(),
            pool: None,
            ..dvm::Config::default()
        })
        .err()
        .expect("a shared home is refused");
        assert_eq!(error.kind(), "home_not_private");
        let message = error.to_string();
        assert!(message.contains(who), "{message}");
        assert!(message.contains("chmod go-w"), "{message}");

        // The command line refuses it too, before it writes anything there.
        let output = dvm_command(&["runtimes", "list"])
            .env("DVM_HOME", &home)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(3), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("chmod go-w"), "{stderr}");
        assert_eq!(std::fs::read_dir(&home).unwrap().count(), 0);
        assert_eq!(mode(&home), bits, "dvm does not change the mode itself");
    }
}

#[test]
fn missing_home_is_made_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("a").join("home");
    dvm::Dvm::new(dvm::Config {
        home: home.clone(),
        pool: None,
        ..dvm::Config::default()
    })
    .expect("a new home is fine");
    assert_eq!(mode(&home), 0o700);
}
