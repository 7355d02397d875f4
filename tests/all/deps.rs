//! Python packages in sandboxes: real pure packages from the index, the store, locks,
//! import detection, and hostile wheels made here, each refused with nothing left outside
//! the store's temp directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use dvm::deps::{Lock, PackageStore};
use dvm::{PackageRequest, RunInput};

use crate::cli::{dvm, json};
use crate::support::*;

fn request(specs: &[&str]) -> PackageRequest {
    PackageRequest {
        requirements: specs.iter().map(|s| s.to_string()).collect(),
        ..PackageRequest::default()
    }
}

fn with_packages(packages: dvm::PackageSet) -> RunInput {
    RunInput {
        packages: Some(packages),
        ..RunInput::default()
    }
}

#[test]
fn real_packages_run_in_python_lite() {
    let lite = runtime("python-lite");
    let packages = lite
        .install_packages(&request(&["tabulate>=0.9", "attrs"]))
        .expect("installs");
    let names: Vec<&str> = packages.installed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["attrs", "tabulate"]);
    let source = "import attr, tabulate\n\
                  @attr.s\nclass P:\n    x = attr.ib()\n\
                  print(tabulate.tabulate([[P(1).x, 2]], tablefmt='plain'))";
    let outcome = lite
        .run_script("main.py", source.as_bytes(), &with_packages(packages))
        .unwrap();
    assert_eq!(stdout(&outcome), "1  2\n", "{}", describe(&outcome));

    // The same set again is a store hit: no pip call, nothing unpacked.
    let again = lite
        .install_packages(&request(&["attrs", "tabulate>=0.9"]))
        .unwrap();
    assert!(again.resolved_from_store);
    assert!(again.installed.iter().all(|p| p.from_store));
}

#[test]
fn python_uses_its_built_in_packages_and_installs_the_rest() {
    let python = runtime("python");
    let packages = python
        .install_packages(&request(&["tabulate", "humanize"]))
        .unwrap();
    assert_eq!(packages.installed.len(), 1, "{packages:?}");
    assert_eq!(packages.installed[0].name, "humanize");
    assert!(
        packages.built_in[0].starts_with("tabulate=="),
        "{packages:?}"
    );
    let source = "import humanize\nprint(humanize.intcomma(1234567))";
    let outcome = python
        .run_script("main.py", source.as_bytes(), &with_packages(packages))
        .unwrap();
    assert_eq!(stdout(&outcome), "1,234,567\n", "{}", describe(&outcome));
    let error = python
        .install_packages(&request(&["numpy<1"]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("built in"), "{error}");
}

#[test]
fn markers_are_evaluated_for_the_guest() {
    let packages = runtime("python-lite")
        .install_packages(&request(&[
            "tabulate; sys_platform == 'wasi'",
            "humanize; sys_platform == 'win32'",
            "attrs; python_version < '3.0'",
        ]))
        .unwrap();
    let names: Vec<&str> = packages.installed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["tabulate"]);
}

#[test]
fn a_package_with_compiled_code_gets_a_clear_error() {
    let error = runtime("python-lite")
        .install_packages(&request(&["ujson"]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("no pure-Python wheel of ujson"), "{error}");
    assert!(error.contains("built in"), "{error}");
    // numpy has compiled code, and the `python` runtime has it built in: the error says so.
    runtime("python");
    let error = runtime("python-lite")
        .install_packages(&request(&["numpy"]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("The `python` runtime has numpy"), "{error}");
    assert!(error.contains("use --runtime python"), "{error}");
}

#[test]
fn imports_are_detected_with_the_guests_parser() {
    let source = r#"
import os, sys
import json as j
import yaml
from humanize import naturalsize
from . import sibling
from .pkg import thing
import mylocal
import tomlkit.api
if sys.argv:
    import tabulate
try:
    import ujson
except ImportError:
    ujson = None
def later():
    from rich.console import Console
__import__("not_an_import")
importlib = __import__("importlib")
importlib.import_module("also_not")
x = "import fake_in_string"
"#;
    let found = runtime("python-lite")
        .detect_imports(source.as_bytes(), &["mylocal".to_string()])
        .unwrap();
    let listed: Vec<(String, String, bool)> = found
        .into_iter()
        .map(|i| (i.module, i.distribution, i.optional))
        .collect();
    let expect = |m: &str, d: &str, o: bool| (m.to_string(), d.to_string(), o);
    assert_eq!(
        listed,
        [
            expect("humanize", "humanize", false),
            expect("rich", "rich", false),
            expect("tabulate", "tabulate", false),
            expect("tomlkit", "tomlkit", false),
            expect("ujson", "ujson", true),
            expect("yaml", "PyYAML", false),
        ]
    );
    // The python runtime has yaml and tabulate built in.
    let found = runtime("python")
        .detect_imports(b"import yaml, tabulate, humanize", &[])
        .unwrap();
    let modules: Vec<&str> = found.iter().map(|i| i.module.as_str()).collect();
    assert_eq!(modules, ["humanize"]);
    // A script that does not parse detects nothing (its run reports the syntax error).
    assert!(
        runtime("python")
            .detect_imports(b"def (", &[])
            .unwrap()
            .is_empty()
    );
}

mod cli {
    use super::*;

    #[test]
    fn inline_metadata_requirements_txt_and_auto_deps() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("main.py");
        std::fs::write(
            &script,
            "# /// script\n# dependencies = [\"humanize\"]\n# ///\n\
             import humanize, tabulate\nprint(humanize.intword(3000000), tabulate.__name__)",
        )
        .unwrap();
        let requirements = dir.path().join("requirements.txt");
        std::fs::write(&requirements, "# for the table\ntabulate\n").unwrap();
        let output = dvm(&[
            "run",
            "--json",
            "--runtime",
            "python-lite",
            "--file",
            requirements.to_str().unwrap(),
            script.to_str().unwrap(),
        ]);
        let value = json(&output);
        assert_eq!(
            value["stdout"],
            "3.0 million tabulate\n",
            "{}",
            show(&output)
        );
        let installed: Vec<&str> = value["packages"]["installed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(installed, ["humanize", "tabulate"]);

        let auto = dir.path().join("auto.py");
        std::fs::write(&auto, "import humanize\nprint(humanize.ordinal(3))").unwrap();
        let without = dvm(&["run", "--runtime", "python-lite", auto.to_str().unwrap()]);
        assert_eq!(without.status.code(), Some(1), "{}", show(&without));
        let with = dvm(&[
            "run",
            "--runtime",
            "python-lite",
            "--auto-deps",
            auto.to_str().unwrap(),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&with.stdout),
            "3rd\n",
            "{}",
            show(&with)
        );
    }

    #[test]
    fn locks_are_written_and_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("dvm.lock");
        let lock_arg = lock.to_str().unwrap();
        let made = dvm(&[
            "deps",
            "lock",
            "--runtime",
            "python-lite",
            "tabulate==0.10.0",
            "--lock",
            lock_arg,
        ]);
        assert_eq!(made.status.code(), Some(0), "{}", show(&made));
        let written = Lock::read(&lock).unwrap();
        assert_eq!(written.packages.len(), 1);
        assert_eq!(written.packages[0].version, "0.10.0");

        let code = "import tabulate\nprint(tabulate.__version__)";
        let locked = dvm(&[
            "run",
            "--runtime",
            "python-lite",
            "--lock",
            lock_arg,
            "--locked",
            "--code",
            code,
        ]);
        assert_eq!(
            String::from_utf8_lossy(&locked.stdout),
            "0.10.0\n",
            "{}",
            show(&locked)
        );

        // A lock whose hash does not match what the index serves is refused. The store
        // has the wheel under its real hash, so the wrong one must be fetched and checked.
        let mut tampered = written.clone();
        tampered.packages[0].sha256 = dvm::deps::Sha256::parse(&"0".repeat(64)).unwrap();
        tampered.write(&lock).unwrap();
        let refused = dvm(&[
            "run",
            "--json",
            "--runtime",
            "python-lite",
            "--lock",
            lock_arg,
            "--locked",
            "--code",
            code,
        ]);
        assert_eq!(refused.status.code(), Some(2), "{}", show(&refused));
        assert_eq!(
            json(&refused)["error"]["kind"],
            "package_hash",
            "{}",
            show(&refused)
        );
    }

    #[test]
    fn deps_list_install_and_gc() {
        let installed = dvm(&[
            "deps",
            "install",
            "--runtime",
            "python-lite",
            "attrs",
            "--json",
        ]);
        let value = json(&installed);
        assert_eq!(
            value["installed"][0]["name"],
            "attrs",
            "{}",
            show(&installed)
        );
        let listed = json(&dvm(&["deps", "list", "--json"]));
        assert!(
            listed["python"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["name"] == "attrs"),
            "{listed}"
        );
        // gc keeps what remembered installs refer to.
        let gc = dvm(&["deps", "gc", "--json"]);
        assert_eq!(gc.status.code(), Some(0), "{}", show(&gc));
        assert!(
            !json(&gc)
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["name"] == "attrs")
        );
        let bad = dvm(&["deps", "install", "not a requirement!!"]);
        assert_eq!(bad.status.code(), Some(2), "{}", show(&bad));
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains("PEP 508"),
            "{}",
            show(&bad)
        );
        let javascript = dvm(&[
            "run",
            "--runtime",
            "javascript",
            "--with",
            "Not A Package!",
            "--code",
            "1",
        ]);
        assert_eq!(javascript.status.code(), Some(2), "{}", show(&javascript));
        assert!(
            String::from_utf8_lossy(&javascript.stderr).contains("not an npm package name"),
            "{}",
            show(&javascript)
        );
    }
}

/// Wheels made here, served with `--find-links`.
mod hostile {
    use super::*;

    fn record_hash(bytes: &[u8]) -> String {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(bytes))
    }

    /// How to spoil a wheel.
    enum Spoil {
        Nothing,
        Member(&'static str),
        Symlink,
        Bomb,
        RecordMismatch,
        Damaged,
    }

    /// Writes `NAME-1.0-py3-none-any.whl` into `dir` with a module `NAME` printing `ok`.
    fn wheel(dir: &Path, name: &str, spoil: Spoil) -> PathBuf {
        let path = dir.join(format!("{name}-1.0-py3-none-any.whl"));
        let module = format!("{name}.py");
        let mut body = b"print('ok')\n".to_vec();
        if let Spoil::Damaged = spoil {
            for line in 0..400 {
                body.extend_from_slice(
                    format!("# padding line {line} {}\n", line * 7919).as_bytes(),
                );
            }
        }
        let info = format!("{name}-1.0.dist-info");
        let metadata = format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n");
        let wheel_file =
            "Wheel-Version: 1.0\nGenerator: dvm-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
        let recorded_body = match spoil {
            Spoil::RecordMismatch => b"print('something else')\n".to_vec(),
            _ => body.clone(),
        };
        let record = format!(
            "{module},sha256={},{}\n{info}/METADATA,sha256={},{}\n{info}/WHEEL,sha256={},{}\n{info}/RECORD,,\n",
            record_hash(&recorded_body),
            recorded_body.len(),
            record_hash(metadata.as_bytes()),
            metadata.len(),
            record_hash(wheel_file.as_bytes()),
            wheel_file.len()
        );
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let add = |zip: &mut zip::ZipWriter<_>, name: &str, bytes: &[u8]| {
            zip.start_file(name, options).unwrap();
            zip.write_all(bytes).unwrap();
        };
        add(&mut zip, &module, &body);
        match spoil {
            Spoil::Member(member) => add(&mut zip, member, b"escaped\n"),
            Spoil::Symlink => {
                zip.add_symlink("link.py", "/etc/passwd", options).unwrap();
            }
            Spoil::Bomb => {
                zip.start_file("bomb.bin", options.large_file(true))
                    .unwrap();
                let zeros = vec![0u8; 1 << 20];
                for _ in 0..600 {
                    zip.write_all(&zeros).unwrap();
                }
            }
            _ => {}
        }
        add(&mut zip, &format!("{info}/METADATA"), metadata.as_bytes());
        add(&mut zip, &format!("{info}/WHEEL"), wheel_file.as_bytes());
        add(&mut zip, &format!("{info}/RECORD"), record.as_bytes());
        let mut bytes = zip.finish().unwrap().into_inner();
        if let Spoil::Damaged = spoil {
            // Cut a stretch out of the first member's data and pad it back to length:
            // the directory still reads (pip takes the wheel), the member does not.
            let start = 30 + module.len() + 200;
            bytes[start..start + 400].fill(0);
        }
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Every path under the package store outside its temp directory.
    fn stored_paths() -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.file_name().is_some_and(|n| n == "tmp") {
                    continue;
                }
                out.push(path.clone());
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&shared_home().join("packages"), &mut out);
        out
    }

    fn install_from(dir: &Path, name: &str) -> Result<dvm::PackageSet, dvm::Error> {
        runtime("python-lite").install_packages(&PackageRequest {
            requirements: vec![name.to_string()],
            find_links: Some(dir.to_path_buf()),
            locked: None,
        })
    }

    #[test]
    fn a_well_made_wheel_installs_offline() {
        let dir = tempfile::tempdir().unwrap();
        wheel(dir.path(), "dvmgood", Spoil::Nothing);
        let packages = install_from(dir.path(), "dvmgood").expect("installs");
        let outcome = runtime("python-lite")
            .run_script("main.py", b"import dvmgood", &with_packages(packages))
            .unwrap();
        assert_eq!(stdout(&outcome), "ok\n", "{}", describe(&outcome));
    }

    #[test]
    fn hostile_wheels_are_refused_and_leave_nothing() {
        let cases = [
            ("dvmdotdot", Spoil::Member("../../escaped.py"), "escapes"),
            (
                "dvmabsolute",
                Spoil::Member("/tmp/dvm-escaped.py"),
                "escapes",
            ),
            ("dvmsymlink", Spoil::Symlink, "link"),
            ("dvmbomb", Spoil::Bomb, "more than"),
            ("dvmrecord", Spoil::RecordMismatch, "RECORD"),
            ("dvmdamaged", Spoil::Damaged, "refused"),
        ];
        for (name, spoil, says) in cases {
            let dir = tempfile::tempdir().unwrap();
            let wheel_path = wheel(dir.path(), name, spoil);
            let error = install_from(dir.path(), name).expect_err(name).to_string();
            assert!(error.contains(says), "{name}: {error}");
            // Other tests install beside this one: look for anything of this wheel's.
            let sha256 = dvm_sha256(&wheel_path);
            let left: Vec<PathBuf> = stored_paths()
                .into_iter()
                .filter(|path| {
                    let text = path.to_string_lossy();
                    text.contains(name) || text.contains("escaped") || text.contains(&sha256)
                })
                .collect();
            assert!(left.is_empty(), "{name} left {left:?}");
            assert!(!Path::new("/tmp/dvm-escaped.py").exists());
        }
        assert!(
            !PackageStore::new(&shared_home())
                .list()
                .iter()
                .any(|wheel| wheel.name.starts_with("dvm") && wheel.name != "dvmgood")
        );
    }

    fn dvm_sha256(path: &Path) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(std::fs::read(path).unwrap());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// npm packages for the JavaScript runtime.
mod javascript {
    use super::*;

    #[test]
    fn bare_and_deep_specifiers_resolve_to_installed_packages() {
        let js = runtime("javascript");
        let packages = js
            .install_packages(&request(&["lodash-es@4", "camelcase-keys@9"]))
            .expect("installs");
        let names: Vec<&str> = packages.installed.iter().map(|p| p.name.as_str()).collect();
        // camelcase-keys's own dependencies come along.
        assert_eq!(
            names,
            [
                "camelcase",
                "camelcase-keys",
                "lodash-es",
                "map-obj",
                "quick-lru",
                "type-fest"
            ]
        );
        let source = r#"import { chunk } from "lodash-es";
import camelCase from "lodash-es/camelCase";
import debounce from "lodash-es/debounce.js";
import camelcaseKeys from "camelcase-keys";
const keys = camelcaseKeys({ "a-b": { "c_d": 1 } }, { deep: true });
const later = await Promise.resolve("awaited");
console.log(JSON.stringify(chunk([1, 2, 3], 2)), camelCase("to camel case"), typeof debounce, JSON.stringify(keys), later);
"#;
        let outcome = js
            .run_script("main.mjs", source.as_bytes(), &with_packages(packages))
            .unwrap();
        assert_eq!(
            stdout(&outcome),
            "[[1,2],[3]] toCamelCase function {\"aB\":{\"cD\":1}} awaited\n",
            "{}",
            describe(&outcome)
        );
        let again = js
            .install_packages(&request(&["camelcase-keys@9", "lodash-es@4"]))
            .unwrap();
        assert!(again.resolved_from_store && again.installed.iter().all(|p| p.from_store));
        // Without the packages the import fails as before.
        let bare = js
            .run_script("main.mjs", source.as_bytes(), &RunInput::default())
            .unwrap();
        assert_ne!(bare.exit_code, Some(0));
    }

    /// An npm tarball of package `name@version` whose entry exports `value`.
    fn npm_tarball(dir: &Path, name: &str, version: &str, value: &str) {
        let mut builder = tar::Builder::new(Vec::new());
        let manifest =
            format!(r#"{{"name": "{name}", "version": "{version}", "module": "lib/index.mjs"}}"#);
        let entry = format!("export default {value:?};\n");
        for (path, contents) in [
            ("package/package.json", manifest),
            ("package/lib/index.mjs", entry),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            header.set_path(path).unwrap();
            header.set_cksum();
            builder.append(&header, contents.as_bytes()).unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &builder.into_inner().unwrap()).unwrap();
        std::fs::write(
            dir.join(format!("{name}-{version}.tgz")),
            gz.finish().unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn a_local_tarball_directory_works_offline() {
        let dir = tempfile::tempdir().unwrap();
        npm_tarball(dir.path(), "dvm-offline-lib", "1.0.0", "one");
        npm_tarball(dir.path(), "dvm-offline-lib", "1.2.0", "one point two");
        npm_tarball(dir.path(), "dvm-offline-lib", "2.0.0", "two");
        let js = runtime("javascript");
        let install = |spec: &str| {
            js.install_packages(&PackageRequest {
                requirements: vec![spec.to_string()],
                find_links: Some(dir.path().to_path_buf()),
                locked: None,
            })
        };
        let source = b"import v from 'dvm-offline-lib';\nconsole.log(v);\n";
        for (spec, expect) in [
            ("dvm-offline-lib@^1", "one point two\n"),
            ("dvm-offline-lib@1.0.0", "one\n"),
            ("dvm-offline-lib", "two\n"),
        ] {
            let packages = install(spec).expect(spec);
            let outcome = js
                .run_script("main.mjs", source, &with_packages(packages))
                .unwrap();
            assert_eq!(stdout(&outcome), expect, "{spec}: {}", describe(&outcome));
        }
        let missing = install("dvm-offline-lib@^3").unwrap_err().to_string();
        assert!(missing.contains("no tarball"), "{missing}");
    }

    #[test]
    fn package_json_with_and_locks_through_the_cli() {
        let dir = tempfile::tempdir().unwrap();
        let package_json = dir.path().join("package.json");
        std::fs::write(
            &package_json,
            r#"{"dependencies": {"lodash-es": "^4.17.0"}}"#,
        )
        .unwrap();
        let script = dir.path().join("app.mjs");
        std::fs::write(
            &script,
            "import { sum } from 'lodash-es';\nconsole.log(sum([1, 2, 3]));\n",
        )
        .unwrap();
        let lock = dir.path().join("js.lock");
        let output = dvm(&[
            "run",
            "--file",
            package_json.to_str().unwrap(),
            "--lock",
            lock.to_str().unwrap(),
            script.to_str().unwrap(),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "6\n",
            "{}",
            show(&output)
        );
        let written = Lock::read(&lock).unwrap();
        assert_eq!(written.runtime, "javascript");
        let locked = dvm(&[
            "run",
            "--lock",
            lock.to_str().unwrap(),
            "--locked",
            script.to_str().unwrap(),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&locked.stdout),
            "6\n",
            "{}",
            show(&locked)
        );
        let with = dvm(&["run", "--with", "lodash-es@4", script.to_str().unwrap()]);
        assert_eq!(
            String::from_utf8_lossy(&with.stdout),
            "6\n",
            "{}",
            show(&with)
        );
        let bad = dvm(&["run", "--with", "../escape", script.to_str().unwrap()]);
        assert_eq!(bad.status.code(), Some(2), "{}", show(&bad));
        let auto = dvm(&["run", "--auto-deps", script.to_str().unwrap()]);
        assert_eq!(auto.status.code(), Some(2), "{}", show(&auto));
    }
}
