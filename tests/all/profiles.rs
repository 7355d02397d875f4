//! Execution profiles (`--profile`) and the configuration file.

use crate::cli::{dvm_command, json};
use crate::support::*;

fn run_in(
    dir: &std::path::Path,
    args: &[&str],
    config: Option<&std::path::Path>,
) -> std::process::Output {
    let mut command = dvm_command(args);
    command.current_dir(dir);
    if let Some(config) = config {
        command.env("DVM_CONFIG", config);
    }
    command.output().unwrap()
}

#[test]
fn built_in_profiles_set_runtime_and_limits_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.py"), "print('hi')\n").unwrap();
    let output = run_in(
        dir.path(),
        &["run", "hello.py", "--profile", "quick", "--json"],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(json(&output)["runtime"]["id"], "python-lite");

    // A JavaScript file keeps its own runtime under a Python profile.
    std::fs::write(dir.path().join("hello.js"), "console.log('hi')\n").unwrap();
    let output = run_in(
        dir.path(),
        &["run", "hello.js", "--profile", "quick", "--json"],
        None,
    );
    assert_eq!(json(&output)["runtime"]["id"], "javascript");

    // judge: 2 s and output over 1 MiB stops the run; --timeout overrides the 2 s.
    std::fs::write(
        dir.path().join("nap.py"),
        "import time\ntime.sleep(1.2)\nprint('woke')\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("loud.py"), "print('x' * (2 << 20))\n").unwrap();
    let output = run_in(
        dir.path(),
        &["run", "loud.py", "--profile", "judge", "--json"],
        None,
    );
    assert_eq!(output.status.code(), Some(125), "{}", show(&output));
    assert_eq!(json(&output)["limit"], "output");
    let output = run_in(
        dir.path(),
        &["run", "nap.py", "--profile", "judge", "--json"],
        None,
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "within the profile's 2 s: {}",
        show(&output)
    );
    let output = run_in(
        dir.path(),
        &[
            "run",
            "nap.py",
            "--profile",
            "judge",
            "--timeout",
            "600ms",
            "--json",
        ],
        None,
    );
    assert_eq!(
        output.status.code(),
        Some(124),
        "the flag's 600 ms wins: {}",
        show(&output)
    );
}

#[test]
fn profiles_come_from_the_directory_the_home_and_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    std::fs::write(
        dir.path().join("profiles/tiny.toml"),
        "description = \"tiny\"\nruntime = \"python-lite\"\n[limits]\nmax_output = 4\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("hello.py"), "print('hello world')\n").unwrap();
    let output = run_in(
        dir.path(),
        &["run", "hello.py", "--profile", "tiny", "--json"],
        None,
    );
    let report = json(&output);
    assert_eq!(report["runtime"]["id"], "python-lite");
    assert_eq!(report["stdout"], "hell", "{report}");

    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[profiles.pkgs]\nruntime = \"python\"\npackages = [\"humanize\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("fmt.py"),
        "import humanize\nprint(humanize.intcomma(1234567))\n",
    )
    .unwrap();
    let output = run_in(
        dir.path(),
        &["run", "fmt.py", "--profile", "pkgs", "--json"],
        Some(&config),
    );
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(json(&output)["stdout"], "1,234,567\n");

    // A path works too; and `dvm test` takes the same flag.
    let output = run_in(
        dir.path(),
        &[
            "run",
            "hello.py",
            "--profile",
            "./profiles/tiny.toml",
            "--json",
        ],
        None,
    );
    assert_eq!(json(&output)["stdout"], "hell");
    std::fs::write(
        dir.path().join("cases.toml"),
        "[[case]]\nexpected_stdout = \"hello world\"\n",
    )
    .unwrap();
    let output = run_in(
        dir.path(),
        &[
            "test",
            "cases.toml",
            "--code",
            "hello.py",
            "--profile",
            "tiny",
            "--json",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    assert_eq!(
        json(&output)["cases"][0]["status_id"],
        4,
        "4 bytes of output: wrong answer"
    );
}

#[test]
fn unknown_and_broken_profiles_exit_2_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.py"), "print(1)\n").unwrap();
    let output = run_in(dir.path(), &["run", "hello.py", "--profile", "nope"], None);
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no profile `nope`") && stderr.contains("quick"),
        "{stderr}"
    );

    std::fs::write(
        dir.path().join("bad.toml"),
        "[limits]\nmemory = \"plenty\"\n",
    )
    .unwrap();
    let output = run_in(
        dir.path(),
        &["run", "hello.py", "--profile", "bad.toml"],
        None,
    );
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("plenty"));

    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[model\n").unwrap();
    let output = run_in(dir.path(), &["agent", "x"], Some(&config));
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("config.toml"));
}
