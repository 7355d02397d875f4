use super::pip::pip_download;
use super::store::marker_environment;
use super::wheel::parse_record;
use super::*;

#[test]
fn record_rows_are_read_as_csv() {
    let record = "pkg/__init__.py,sha256=abc,12\r\n\
                  \"pkg/a,b \"\"q\"\".py\",sha256=def,3\n\
                  \n\
                  pkg-1.0.dist-info/RECORD,,\n";
    let listed = parse_record(record).unwrap();
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        [
            "pkg-1.0.dist-info/RECORD",
            "pkg/__init__.py",
            "pkg/a,b \"q\".py"
        ]
    );
    assert_eq!(
        listed["pkg/a,b \"q\".py"],
        ("sha256=def".to_string(), "3".to_string())
    );
    assert_eq!(
        listed["pkg-1.0.dist-info/RECORD"],
        (String::new(), String::new())
    );
    for bad in [
        "a.py,sha256=x\n",
        "a.py,sha256=x,1,extra\n",
        "\"a.py,sha256=x,1\n",
    ] {
        let error = parse_record(bad).unwrap_err();
        assert!(error.contains("RECORD"), "{bad:?}: {error}");
    }
}

#[test]
fn the_operators_pip_index_becomes_explicit_flags() {
    let env = |name: &str| -> Option<std::ffi::OsString> {
        match name {
            "PIP_INDEX_URL" => Some("https://mirror.invalid/simple".into()),
            "PIP_EXTRA_INDEX_URL" => Some("https://a.invalid/s  https://b.invalid/s".into()),
            "PIP_CERT" => Some("/etc/ssl/ca.pem".into()),
            "PIP_TRUSTED_HOST" => Some(String::new().into()),
            _ => None,
        }
    };
    let args: Vec<String> = ToolEnv::from_vars(env)
        .pip_index_args()
        .into_iter()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        args,
        [
            "--index-url",
            "https://mirror.invalid/simple",
            "--extra-index-url",
            "https://a.invalid/s",
            "--extra-index-url",
            "https://b.invalid/s",
            "--cert",
            "/etc/ssl/ca.pem"
        ]
    );
    assert!(ToolEnv::from_vars(|_| None).pip_index_args().is_empty());
}

#[test]
fn the_tool_environment_keeps_only_the_named_variables_and_the_first_npm_registry() {
    let env = |name: &str| -> Option<std::ffi::OsString> {
        match name {
            "PATH" => Some("/usr/bin".into()),
            "HTTPS_PROXY" => Some("http://proxy.invalid:3128".into()),
            "PYTHONPATH" | "NODE_OPTIONS" => Some("/host".into()),
            "NPM_CONFIG_REGISTRY" => Some(String::new().into()),
            "npm_config_registry" => Some("https://npm.invalid/".into()),
            _ => None,
        }
    };
    let tools = ToolEnv::from_vars(env);
    let kept: Vec<&str> = tools.kept.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(kept, ["PATH", "HTTPS_PROXY"]);
    let args: Vec<String> = tools
        .npm_registry_args()
        .into_iter()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    assert_eq!(args, ["--registry", "https://npm.invalid/"]);
    assert!(tools.pip_index_args().is_empty());
    // Debug shows names, never values (a proxy URL may hold a password).
    assert!(!format!("{tools:?}").contains("proxy.invalid"));
    assert!(ToolEnv::from_vars(|_| None).npm_registry_args().is_empty());
}

#[test]
fn names_normalize_as_pep_503_says() {
    assert_eq!(normalize("Typing_Extensions"), "typing-extensions");
    assert_eq!(normalize("zope.interface"), "zope-interface");
    assert_eq!(normalize("a--b__c"), "a-b-c");
}

#[test]
fn requirements_txt_keeps_requirements_and_refuses_options() {
    let text = "# top\nattrs>=21  # inline\n\ntabulate==0.9.0 --hash=sha256:abc\n";
    assert_eq!(
        parse_requirements_txt(text).unwrap(),
        ["attrs>=21", "tabulate==0.9.0"]
    );
    assert!(parse_requirements_txt("-r other.txt").is_err());
    assert!(parse_requirements_txt("--index-url x").is_err());
    let error = parse_requirements_txt("evil @ file:///tmp/x").unwrap_err();
    assert_eq!(error.kind(), "unsupported_requirement");
}

#[test]
fn inline_metadata_is_read_from_the_script_block() {
    let source = "# /// script\n# requires-python = \">=3.11\"\n# dependencies = [\n#   \"humanize\",\n#   \"tabulate>=0.9\",\n# ]\n# ///\nimport humanize\n";
    assert_eq!(
        parse_inline_metadata(source).unwrap(),
        ["humanize", "tabulate>=0.9"]
    );
    assert!(parse_inline_metadata("print(1)").unwrap().is_empty());
    assert!(parse_inline_metadata("# /// script\n# dependencies = [\n").is_err());
    assert!(parse_inline_metadata("# /// script\nx = 1\n# ///\n").is_err());
    let evil = "# /// script\n# dependencies = [\"evil @ file:///tmp/x\"]\n# ///\n";
    let error = parse_inline_metadata(evil).unwrap_err();
    assert_eq!(error.kind(), "unsupported_requirement");
    assert!(error.to_string().contains("# /// script"), "{error}");
}

#[test]
fn markers_are_evaluated_for_the_guest() {
    let parse_requirement =
        |text: &str| PythonRequirement::parse(text).map(|r| r.requirement().clone());
    let env = marker_environment("3.15.0").unwrap();
    let yes =
        parse_requirement("a; python_version >= \"3.12\" and sys_platform == \"wasi\"").unwrap();
    let no = parse_requirement("b; sys_platform == \"win32\"").unwrap();
    assert!(yes.marker.evaluate(&env, &[]));
    for marker in [
        "sys_platform == 'wasi'",
        "sys_platform == \"wasi\"",
        "python_version >= '3.12'",
        "platform_machine == 'wasm32'",
    ] {
        let requirement = parse_requirement(&format!("a; {marker}")).unwrap();
        assert!(
            requirement.marker.evaluate(&env, &[]),
            "{marker}: {:?}",
            requirement.marker
        );
    }
    assert!(!no.marker.evaluate(&env, &[]));
}

#[test]
fn import_names_map_to_distributions() {
    assert_eq!(distribution_for("yaml"), "PyYAML");
    assert_eq!(distribution_for("sklearn"), "scikit-learn");
    assert_eq!(distribution_for("humanize"), "humanize");
    let detected = parse_detected("bs4\nujson?\n模块\n");
    assert_eq!(detected[0].distribution, "beautifulsoup4");
    assert!(detected[1].optional && !detected[0].optional);
    assert_eq!(detected.len(), 2, "a name no registry can hold is left out");
}

#[test]
fn a_truncated_wheel_is_refused_and_nothing_is_stored() {
    use std::io::Write;
    let home = tempfile::tempdir().unwrap();
    let store = PackageStore::new(home.path());
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("m.py", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(&vec![b'#'; 10_000]).unwrap();
    let mut bytes = zip.finish().unwrap().into_inner();
    bytes.truncate(bytes.len() / 2);
    let wheel = home.path().join("m-1.0-py3-none-any.whl");
    std::fs::write(&wheel, bytes).unwrap();
    let error = store
        .unpack(
            &wheel,
            &WheelFilename::parse("m-1.0-py3-none-any.whl").unwrap(),
            &Sha256::parse(&"ab".repeat(32)).unwrap(),
        )
        .unwrap_err()
        .to_string();
    assert!(error.contains("refused"), "{error}");
    assert!(
        !store
            .tree(&Sha256::parse(&"ab".repeat(32)).unwrap())
            .exists()
    );
    let temp = std::fs::read_dir(store.dir.join("tmp")).unwrap().count();
    assert_eq!(temp, 0, "temp directories are removed");
}

/// Writes an executable shell script that records its environment, working directory
/// and arguments into `out`, answering the interpreter question as a Python would.
pub(crate) fn recording_tool(dir: &Path, out: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("tool");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = \"-c\" ]; then echo \"$0\"; echo /nonexistent-user-base; exit 0; fi\n\
             env > {out}/env\npwd > {out}/pwd\nls -A > {out}/ls\nfor a in \"$@\"; do echo \"$a\"; done > {out}/args\nexit 3\n",
            out = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn pip_runs_with_a_controlled_environment_in_a_fresh_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let tool = recording_tool(dir.path(), &out);
    let dest = dir.path().join("t").join("wheels");
    let error = pip_download(
        tool.to_str().unwrap(),
        "3.12",
        ["tabulate>=0.9"].into_iter(),
        None,
        &dest,
        false,
        &ToolEnv::from_env(),
    )
    .unwrap_err();
    assert_eq!(error.kind(), "packages");
    let env = std::fs::read_to_string(out.join("env")).unwrap();
    let allowed = [
        "HOME",
        "XDG_CONFIG_HOME",
        "XDG_CACHE_HOME",
        "TMPDIR",
        "PIP_CONFIG_FILE",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUSERBASE",
        "PWD",
        "SHLVL",
        "_",
    ];
    for line in env.lines() {
        let name = line.split('=').next().unwrap();
        assert!(
            allowed.contains(&name) || KEPT_ENV.contains(&name),
            "pip saw {name} from the host environment"
        );
    }
    assert!(env.contains("PIP_CONFIG_FILE=/dev/null\n"), "{env}");
    let home = std::env::var("HOME").unwrap_or_default();
    assert!(
        !env.contains(&format!("HOME={home}\n")) || home.is_empty(),
        "{env}"
    );
    let pwd = std::fs::read_to_string(out.join("pwd")).unwrap();
    assert!(pwd.trim().ends_with("/work"), "{pwd}");
    assert!(std::fs::read_to_string(out.join("ls")).unwrap().is_empty());
    let args: Vec<String> = std::fs::read_to_string(out.join("args"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    for flag in ["--isolated", "--only-binary=:all:", "--no-cache-dir", "--"] {
        assert!(args.iter().any(|a| a == flag), "{flag} in {args:?}");
    }
    assert_eq!(args.last().unwrap(), "tabulate>=0.9");
    // A requirement that is not validated never reaches the tool.
    std::fs::remove_file(out.join("args")).unwrap();
    let refused = pip_download(
        tool.to_str().unwrap(),
        "3.12",
        ["evil @ file:///tmp/x"].into_iter(),
        None,
        &dest,
        false,
        &ToolEnv::from_env(),
    )
    .unwrap_err();
    assert_eq!(refused.kind(), "unsupported_requirement");
    assert!(!out.join("args").exists());
}

fn lock_json(python: &str, name: &str, file: &str, sha256: &str) -> String {
    serde_json::json!({
        "schema": LOCK_SCHEMA, "runtime": "r", "python": python,
        "packages": [{"name": name, "version": "1.0.0", "file": file, "sha256": sha256}],
    })
    .to_string()
}

#[test]
fn locks_with_hostile_fields_are_refused_when_read() {
    let sha = "0".repeat(64);
    let good = lock_json("3.12", "m", "m-1.0.0-py3-none-any.whl", &sha);
    assert!(serde_json::from_str::<Lock>(&good).is_ok());
    let npm = lock_json("", "@s/p", "s-p-1.0.0.tgz", &sha);
    assert!(serde_json::from_str::<Lock>(&npm).is_ok());
    for bad in [
        lock_json("3.12", "m", "m-1.0.0-py3-none-any.whl", "../../dir"),
        lock_json("3.12", "../m", "m-1.0.0-py3-none-any.whl", &sha),
        lock_json("3.12", "m", "../m-1.0.0-py3-none-any.whl", &sha),
        lock_json("3.12", "m", "other-1.0.0-py3-none-any.whl", &sha),
        lock_json("3.12", "M", "m-1.0.0-py3-none-any.whl", &sha),
        lock_json("../3", "m", "m-1.0.0-py3-none-any.whl", &sha),
        lock_json("", "../../x", "x-1.0.0.tgz", &sha),
        lock_json("", "x", "../x-1.0.0.tgz", &sha),
        lock_json("", "x", "x-1.0.0.tgz", &"A".repeat(64)),
    ] {
        assert!(serde_json::from_str::<Lock>(&bad).is_err(), "{bad}");
    }
}

#[test]
fn read_only_never_adds_bits_nor_touches_shared_or_linked_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/own.py"), "x").unwrap();
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, "x").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::hard_link(&outside, tree.join("hard.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, tree.join("soft.txt")).unwrap();
    make_read_only(&tree).unwrap();
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tree.join("sub/own.py")) & 0o222, 0);
    assert_eq!(mode(&outside), 0o640, "a shared inode keeps its mode");
    remove_tree(&tree);
    assert!(!tree.exists());
    assert_eq!(mode(&outside), 0o640);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "x");
}
