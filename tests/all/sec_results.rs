//! Issue 15, class 4 and the result-cache parts of class 10, tried as an attacker would: a
//! poisoned bundle (re-sealed the old way, re-signed by a stranger, with `../` output
//! paths), cache keys that walk out of the store, a bundle that would buffer gigabytes, and
//! on NATS: a server that wants a token, forged outcomes and cache entries on the bus, and
//! limits a worker caps. Each asserts what the host shows: honeypot files, peak memory of
//! the dvm process, what a later run prints.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use dvm::results::{CacheKey, CacheStatus, Keys, OutputPath, SigningKey, Trust};
use dvm::{Config, Determinism, Dvm, RunInput, Workspace};
use proptest::prelude::*;

use crate::support::*;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// A WASI command that prints `genuine` and writes `out.txt` (the same bytes).
const PROGRAM: &str = "(module
  (import \"wasi_snapshot_preview1\" \"fd_write\" (func $w (param i32 i32 i32 i32) (result i32)))
  (import \"wasi_snapshot_preview1\" \"path_open\"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export \"memory\") 1)
  (data (i32.const 100) \"genuine\\n\")
  (data (i32.const 300) \"out.txt\")
  (func (export \"_start\")
    (i32.store (i32.const 200) (i32.const 100))
    (i32.store (i32.const 204) (i32.const 8))
    (drop (call $w (i32.const 1) (i32.const 200) (i32.const 1) (i32.const 400)))
    (drop (call $open (i32.const 4) (i32.const 0) (i32.const 300) (i32.const 7)
                      (i32.const 1) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 500)))
    (drop (call $w (i32.load (i32.const 500)) (i32.const 200) (i32.const 1) (i32.const 400)))))";

fn deterministic() -> RunInput {
    RunInput {
        deterministic: Some(Determinism { seed: 1 }),
        ..RunInput::default()
    }
}

fn home_dvm(home: &Path) -> Dvm {
    Dvm::new(Config {
        home: home.to_path_buf(),
        pool: None,
        ..Config::default()
    })
    .unwrap()
}

fn run_program(home: &Path, input: &RunInput) -> dvm::Outcome {
    home_dvm(home)
        .load_bytes("poison.wat", PROGRAM.as_bytes())
        .unwrap()
        .run(input)
        .unwrap()
}

/// `dvm ARGS` with its own home.
fn dvm_in(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dvm"))
        .args(args)
        .env("DVM_HOME", home)
        .env_remove("DVM_LOG")
        .env_remove("DVM_CONFIG")
        .env_remove("DVM_CACHE_TRUST")
        .output()
        .expect("dvm starts")
}

fn entry_path(home: &Path, key: &str) -> PathBuf {
    home.join("results/v2/entries").join(format!("{key}.json"))
}

/// The signed message of an entry, as `src/results/signing.rs` documents it: the purpose,
/// the key, the body and the blob list, each with its length.
fn entry_message(key: &str, body: &str) -> Vec<u8> {
    let entry: serde_json::Value = serde_json::from_str(body).unwrap();
    let files = entry["outcome"]["files"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut blobs = (files.len() as u64).to_le_bytes().to_vec();
    for file in &files {
        let hash = file["blake3"].as_str().unwrap_or("");
        let raw = blake3::Hash::from_hex(hash)
            .map(|h| *h.as_bytes())
            .unwrap_or([0; 32]);
        blobs.extend_from_slice(&raw);
        blobs.extend_from_slice(&file["size"].as_u64().unwrap_or(0).to_le_bytes());
    }
    let mut out = Vec::new();
    for part in [
        b"dvm result-cache entry v2".as_slice(),
        key.as_bytes(),
        body.as_bytes(),
        &blobs,
    ] {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// An entry over `body`, signed with the seed in the key file `seed_file`.
fn signed_entry(key: &str, body: &str, seed_file: &Path) -> Vec<u8> {
    let hex = std::fs::read_to_string(seed_file).unwrap();
    let seed: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex.trim()[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let public: String = ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let signature = pair.sign(&entry_message(key, body));
    serde_json::to_vec(&serde_json::json!({
        "format": 2,
        "signer": format!("ed25519:{public}"),
        "signature": b64().encode(signature.as_ref()),
        "body": body,
    }))
    .unwrap()
}

/// The body of a stored entry, edited by `edit`.
fn edited_body(stored: &[u8], edit: impl Fn(&mut serde_json::Value)) -> String {
    let sealed: serde_json::Value = serde_json::from_slice(stored).unwrap();
    let mut body: serde_json::Value =
        serde_json::from_str(sealed["body"].as_str().unwrap()).unwrap();
    edit(&mut body);
    body.to_string()
}

fn pwn_stdout(body: &mut serde_json::Value) {
    body["outcome"]["stdout"] = b64().encode(b"pwned\n").into();
}

/// A `.tar.zst` of `members` (name, bytes).
fn bundle(path: &Path, members: &[(String, Vec<u8>)]) {
    let mut out = tar::Builder::new(Vec::new());
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        out.append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    let tarball = out.into_inner().unwrap();
    let packed = ruzstd::encoding::compress_to_vec(
        tarball.as_slice(),
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    std::fs::write(path, packed).unwrap();
}

/// The members of a bundle.
fn members(path: &Path) -> Vec<(String, Vec<u8>)> {
    let decoder =
        ruzstd::decoding::StreamingDecoder::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut archive = tar::Archive::new(decoder);
    archive
        .entries()
        .unwrap()
        .map(|member| {
            let mut member = member.unwrap();
            let name = member.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            member.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

#[test]
fn a_tampered_bundle_resealed_the_old_way_is_refused_and_the_real_output_computed() {
    let home = tempfile::tempdir().unwrap();
    let wat = home.path().join("poison.wat");
    std::fs::write(&wat, PROGRAM).unwrap();
    let wat = wat.to_str().unwrap();
    let first = dvm_in(home.path(), &["run", "--json", "--cache", wat]);
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(first["cache"], "miss", "{first}");
    assert_eq!(first["stdout"], "genuine\n");
    let key = first["cache_key"].as_str().unwrap().to_string();
    let exported = home.path().join("b.tar.zst");
    let out = dvm_in(
        home.path(),
        &["cache", "export", &key, "--to", exported.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let original = members(&exported);
    let out = dvm_in(home.path(), &["cache", "rm", &key]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    let stranger = home.path().join("stranger.key");
    SigningKey::create(&stranger).unwrap();
    type Forge = Box<dyn Fn(&str, &[u8]) -> Vec<u8>>;
    let forgeries: Vec<(&str, Forge)> = vec![
        (
            "re-sealed with the old unkeyed digest",
            Box::new(|_, stored| {
                let body = edited_body(stored, pwn_stdout);
                serde_json::to_vec(&serde_json::json!({
                    "digest": blake3::hash(body.as_bytes()).to_hex().to_string(),
                    "body": body,
                }))
                .unwrap()
            }),
        ),
        (
            "edited under the original signature",
            Box::new(|_, stored| {
                let mut sealed: serde_json::Value = serde_json::from_slice(stored).unwrap();
                sealed["body"] = edited_body(stored, pwn_stdout).into();
                serde_json::to_vec(&sealed).unwrap()
            }),
        ),
        (
            "re-signed by a key nobody trusts",
            Box::new(move |key, stored| {
                signed_entry(key, &edited_body(stored, pwn_stdout), &stranger)
            }),
        ),
    ];
    for (what, forge) in forgeries {
        let forged: Vec<(String, Vec<u8>)> = original
            .iter()
            .map(|(name, bytes)| match name.starts_with("entries/") {
                true => (name.clone(), forge(&key, bytes)),
                false => (name.clone(), bytes.clone()),
            })
            .collect();
        let path = home.path().join("forged.tar.zst");
        bundle(&path, &forged);
        let out = dvm_in(home.path(), &["cache", "import", path.to_str().unwrap()]);
        assert_ne!(out.status.code(), Some(0), "{what}: {}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("imported 0 entries"),
            "{what}: {}",
            show(&out)
        );
        assert!(
            !entry_path(home.path(), &key).exists(),
            "{what}: the forged entry was stored"
        );
        let again = dvm_in(home.path(), &["run", "--json", "--cache", wat]);
        let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
        assert_eq!(again["cache"], "miss", "{what}: {again}");
        assert_eq!(again["stdout"], "genuine\n", "{what}");
        let out = dvm_in(home.path(), &["cache", "rm", &key]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    }
}

#[test]
fn an_entry_signed_by_an_untrusted_key_is_a_counted_miss_until_trusted() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = run_program(a.path(), &deterministic());
    assert_eq!(first.cache, CacheStatus::Miss);
    let key = first.cache_key.clone().unwrap();
    // B's store gets A's genuine entry and blob, and a stranger's forgery beside it.
    let copy = |from: &Path, to: &Path| {
        for kind in ["entries", "blobs"] {
            let target = to.join("results/v2").join(kind);
            std::fs::create_dir_all(&target).unwrap();
            for file in std::fs::read_dir(from.join("results/v2").join(kind)).unwrap() {
                let file = file.unwrap();
                std::fs::copy(file.path(), target.join(file.file_name())).unwrap();
            }
        }
    };
    copy(a.path(), b.path());
    let dvm_b = home_dvm(b.path());
    let program = dvm_b.load_bytes("poison.wat", PROGRAM.as_bytes()).unwrap();
    let in_b = program.run(&deterministic()).unwrap();
    assert_eq!(in_b.cache, CacheStatus::Miss, "A's key is not B's");
    assert_eq!(in_b.stdout, b"genuine\n");
    assert!(dvm_b.results().rejected() >= 1, "the refusal is counted");

    // A stranger's entry in B's own store is not served either.
    let stranger = b.path().join("stranger.key");
    SigningKey::create(&stranger).unwrap();
    let stored = std::fs::read(entry_path(b.path(), &key)).unwrap();
    let forged = signed_entry(&key, &edited_body(&stored, pwn_stdout), &stranger);
    std::fs::write(entry_path(b.path(), &key), forged).unwrap();
    let again = program.run(&deterministic()).unwrap();
    assert_eq!(again.cache, CacheStatus::Miss);
    assert_eq!(again.stdout, b"genuine\n");

    // Through a bundle: refused without trust, taken with it.
    let exported = a.path().join("a.tar.zst");
    home_dvm(a.path()).results().export(&[], &exported).unwrap();
    let c = tempfile::tempdir().unwrap();
    let refused = home_dvm(c.path()).results().import(&exported, &[]).unwrap();
    assert_eq!(refused.imported, 0, "{refused:?}");
    assert!(refused.rejected[0].contains("not trusted"), "{refused:?}");
    let a_key = home_dvm(a.path()).results().keys().unwrap().signer.public();
    let out = dvm_in(c.path(), &["cache", "trust", &a_key.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = dvm_in(c.path(), &["cache", "import", exported.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let printed = dvm_in(a.path(), &["cache", "key"]);
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        a_key.to_string()
    );
    assert_eq!(
        run_program(c.path(), &deterministic()).cache,
        CacheStatus::Hit,
        "a trusted key's entry is a hit"
    );
}

#[test]
fn keys_trusted_in_the_configuration_file_are_trusted_and_others_are_not() {
    let (a, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_program(a.path(), &deterministic());
    let exported = a.path().join("a.tar.zst");
    home_dvm(a.path()).results().export(&[], &exported).unwrap();
    let a_key = home_dvm(a.path()).results().keys().unwrap().signer.public();
    let config = c.path().join("config.toml");
    std::fs::write(&config, "[cache]\ntrusted_keys = [\"ed25519:not-a-key\"]\n").unwrap();
    let out = dvm_in(c.path(), &["cache", "import", exported.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not trusted"),
        "{}",
        show(&out)
    );
    std::fs::write(&config, format!("[cache]\ntrusted_keys = [\"{a_key}\"]\n")).unwrap();
    let out = dvm_in(c.path(), &["cache", "import", exported.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 1 entries"));
}

#[test]
fn the_home_signing_key_is_private_and_refused_when_others_can_read_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let home = tempfile::tempdir().unwrap();
    run_program(home.path(), &deterministic());
    let key = home.path().join("keys/results.ed25519");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = dvm_in(home.path(), &["cache", "key"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        show(&out)
    );
    // A run still works; it is not cached with a key others could have copied.
    let ran = run_program(home.path(), &deterministic());
    assert_eq!(ran.stdout, b"genuine\n");
    let again = run_program(home.path(), &deterministic());
    assert_ne!(again.cache, CacheStatus::Hit);
    // A 0600 key that belongs to another user is refused as well (only root can make one).
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    if rustix::process::geteuid().is_root()
        && std::os::unix::fs::chown(&key, Some(65534), Some(65534)).is_ok()
    {
        let out = dvm_in(home.path(), &["cache", "key"]);
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not to you"),
            "{}",
            show(&out)
        );
    }
}

#[test]
fn cache_show_rm_and_export_refuse_keys_that_are_paths() {
    let home = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    run_program(home.path(), &deterministic());
    let honeypots = [
        home.path().join("honey.json"),
        home.path().join("results/honey.json"),
        outside.path().join("honey.json"),
    ];
    for honeypot in &honeypots {
        std::fs::write(honeypot, b"{}").unwrap();
    }
    let absolute = outside.path().join("honey");
    let keys = [
        "../../../honey".to_string(),
        "../../honey".to_string(),
        absolute.to_str().unwrap().to_string(),
        format!("{}/../x", "a".repeat(60)),
        "A".repeat(64),
    ];
    for key in &keys {
        for args in [
            vec!["cache", "show", key],
            vec!["cache", "rm", key],
            vec!["cache", "export", key, "--to", "/dev/null"],
        ] {
            let out = dvm_in(home.path(), &args);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("not a result-cache key"),
                "{args:?}: {}",
                show(&out)
            );
        }
    }
    for honeypot in &honeypots {
        assert!(honeypot.exists(), "{} was removed", honeypot.display());
    }
}

/// Runs `dvm` and returns its output and its peak resident memory in bytes (VmHWM, read
/// while it runs).
fn peak_rss(home: &Path, args: &[&str]) -> (std::process::ExitStatus, String, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dvm"))
        .args(args)
        .env("DVM_HOME", home)
        .env_remove("DVM_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(line) = text.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kib: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            peak = peak.max(kib * 1024);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "dvm did not finish");
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr, peak)
}

/// A zstd frame of `raw` followed by `zeros` zero bytes, in RLE blocks (so a bundle that
/// unpacks to gigabytes is a few kilobytes, made at once).
fn zstd_then_zeros(raw: &[u8], zeros: u64) -> Vec<u8> {
    const BLOCK: u64 = 128 << 10;
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3];
    let header = |out: &mut Vec<u8>, last: bool, kind: u32, size: u64| {
        let value = u32::from(last) | (kind << 1) | ((size as u32) << 3);
        out.extend_from_slice(&value.to_le_bytes()[..3]);
    };
    for (i, chunk) in raw.chunks(BLOCK as usize).enumerate() {
        let last = zeros == 0 && (i + 1) * BLOCK as usize >= raw.len();
        header(&mut out, last, 0, chunk.len() as u64);
        out.extend_from_slice(chunk);
    }
    let mut left = zeros;
    while left > 0 {
        let size = left.min(BLOCK);
        left -= size;
        header(&mut out, left == 0, 1, size);
        out.push(0);
    }
    out
}

/// A tar header block for `name` of `size` bytes and type `kind`.
fn tar_header(name: &str, size: u64, kind: tar::EntryType) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_path(name).unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(kind);
    header.set_cksum();
    header.as_bytes().to_vec()
}

#[test]
fn a_bundle_of_huge_members_is_read_with_bounded_memory() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mib = 1u64 << 20;
    // 1. A 512 MiB output file, streamed to disk (the member's zeros, then the tar's end).
    let blob = 512 * mib;
    let path = dir.path().join("blob.tar.zst");
    let name = format!("blobs/{}", "0".repeat(64));
    std::fs::write(
        &path,
        zstd_then_zeros(
            &tar_header(&name, blob, tar::EntryType::Regular),
            blob + 1024,
        ),
    )
    .unwrap();
    let (status, stderr, peak) =
        peak_rss(home.path(), &["cache", "import", path.to_str().unwrap()]);
    assert!(status.success(), "{stderr}");
    assert!(
        peak < 256 * mib,
        "importing a 512 MiB member peaked at {peak} bytes"
    );

    // 2. Members that declare more than their kind allows are refused before any is read:
    // an entry, a GNU long name and a pax header of gigabytes.
    let key = "b".repeat(64);
    for (name, kind) in [
        (format!("entries/{key}.json"), tar::EntryType::Regular),
        ("././@LongLink".to_string(), tar::EntryType::GNULongName),
        ("pax".to_string(), tar::EntryType::XHeader),
    ] {
        let size = 3 << 30;
        let path = dir.path().join("bomb.tar.zst");
        std::fs::write(
            &path,
            zstd_then_zeros(&tar_header(&name, size, kind), size + 1024),
        )
        .unwrap();
        let started = Instant::now();
        let (status, stderr, peak) =
            peak_rss(home.path(), &["cache", "import", path.to_str().unwrap()]);
        assert!(!status.success(), "{name}: {stderr}");
        assert!(stderr.contains("cap"), "{name}: {stderr}");
        assert!(peak < 256 * mib, "{name}: peaked at {peak} bytes");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: refusing took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        dvm_in(home.path(), &["cache", "stats", "--json"])
            .status
            .code(),
        Some(0)
    );
    assert!(!entry_path(home.path(), &key).exists());
}

#[test]
fn an_entry_with_a_parent_output_path_is_refused_and_never_written() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = run_program(a.path(), &deterministic());
    assert_eq!(first.files.len(), 1);
    let key = first.cache_key.clone().unwrap();
    let seed = a.path().join("keys/results.ed25519");
    let stored = std::fs::read(entry_path(a.path(), &key)).unwrap();
    // Signed by A's own, trusted key: the path is refused for what it is.
    for bad in [
        "../escaped.txt",
        "/tmp/escaped.txt",
        "a/../../escaped.txt",
        "",
    ] {
        let body = edited_body(&stored, |body| {
            body["outcome"]["files"][0]["path"] = bad.into();
        });
        let forged = signed_entry(&key, &body, &seed);
        std::fs::write(entry_path(a.path(), &key), &forged).unwrap();
        let workspace = Workspace::new().unwrap();
        let honeypot = workspace.path().parent().unwrap().join("escaped.txt");
        let ran = run_program(
            a.path(),
            &RunInput {
                workspace: Some(workspace.clone()),
                ..deterministic()
            },
        );
        assert_eq!(ran.cache, CacheStatus::Miss, "{bad:?}");
        assert_eq!(ran.files[0].path, "out.txt");
        assert!(!honeypot.exists(), "{bad:?} wrote {}", honeypot.display());
        assert!(workspace.path().join("out.txt").exists());

        // In a bundle, it is rejected before anything is stored.
        let blob = &first.files[0];
        let hash = blob.blake3.clone().unwrap();
        let blob_bytes = std::fs::read(a.path().join("results/v2/blobs").join(&hash)).unwrap();
        let path = a.path().join("bad-path.tar.zst");
        bundle(
            &path,
            &[
                (format!("blobs/{hash}"), blob_bytes),
                (format!("entries/{key}.json"), forged),
            ],
        );
        let a_key = home_dvm(a.path()).results().keys().unwrap().signer.public();
        let report = home_dvm(b.path())
            .results()
            .import(&path, &[a_key])
            .unwrap();
        assert_eq!(report.imported, 0, "{bad:?}: {report:?}");
        assert!(
            report.rejected[0].contains("relative workspace path"),
            "{bad:?}: {report:?}"
        );
        assert!(!entry_path(b.path(), &key).exists());
    }
}

proptest! {
    #[test]
    fn cache_keys_are_exactly_64_lowercase_hex_digits(text in "[0-9a-fA-F./\\\\-]{0,70}") {
        let valid = text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        prop_assert_eq!(CacheKey::parse(&text).is_ok(), valid);
        if let Ok(key) = CacheKey::parse(&text) {
            prop_assert_eq!(key.as_str(), text.as_str());
        }
    }

    #[test]
    fn any_string_is_a_key_only_when_it_is_hex(text in any::<String>()) {
        if let Ok(key) = CacheKey::parse(&text) {
            prop_assert!(!key.as_str().contains(['/', '.', '\0']));
            prop_assert_eq!(key.as_str().len(), 64);
        }
    }

    #[test]
    fn an_output_path_never_leaves_the_workspace(text in "[a./\\\\\0b]{0,12}|\\PC{0,20}") {
        if let Ok(path) = OutputPath::parse(&text) {
            let host = Path::new(path.as_str());
            prop_assert!(host.is_relative());
            prop_assert!(host.components().all(|c| matches!(c, std::path::Component::Normal(_))));
            prop_assert!(!path.as_str().contains('\0'));
            prop_assert_eq!(
                host.components().count(),
                path.as_str().split('/').count(),
                "no component is dropped when the host joins it"
            );
        }
    }

    #[test]
    fn ordinary_relative_paths_are_output_paths(
        parts in proptest::collection::vec("[a-zA-Z0-9_-][a-zA-Z0-9_.-]{0,10}", 1..6)
    ) {
        let text = parts.join("/");
        prop_assert_eq!(OutputPath::parse(&text).map(|p| p.as_str().to_string()), Ok(text));
    }
}

#[test]
fn signed_keys_and_trust_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::create(&dir.path().join("k")).unwrap();
    assert!(
        SigningKey::create(&dir.path().join("k")).is_err(),
        "never overwritten"
    );
    let keys = Keys::new(key, Trust::default());
    assert!(keys.trust.contains(&keys.signer.public()));
}

mod nats {
    use super::*;
    use crate::nats::{Nats, Worker, config, request, runtime};
    use dvm::nats::{NatsAuth, Queue, SignedOutcome, WireOutcome};

    fn forged_outcome(id: &str) -> WireOutcome {
        serde_json::from_value(serde_json::json!({
            "request": id, "worker": "evil", "delivery": 1, "error": null,
            "status": "ok", "exit_code": 0, "stdout": b64().encode(b"pwned\n"),
            "stderr": "", "stdout_bytes": 6, "stderr_bytes": 0,
            "truncated": {"stdout": false, "stderr": false}, "limit": null,
            "fuel_used": 0, "duration_ms": 1.0, "memory_peak_bytes": 0, "trap": null,
            "files": [], "cache": "off", "cache_key": null
        }))
        .unwrap()
    }

    #[test]
    fn a_server_that_wants_a_token_refuses_nodes_without_it() {
        let nats = Nats::start_with(&["--auth", "s3cret-token"]);
        let rt = runtime();
        let started = Instant::now();
        let refused = rt.block_on(Queue::connect(&config(&nats)));
        assert!(refused.is_err(), "connected without the token");
        assert!(started.elapsed() < Duration::from_secs(30));
        let with_token = config(&nats).with_auth(NatsAuth {
            token: Some("s3cret-token".into()),
            ..NatsAuth::default()
        });
        rt.block_on(Queue::connect(&with_token)).unwrap();
        // A worker without the token stops with an error; one with it serves runs.
        let out = Command::new(env!("CARGO_BIN_EXE_dvm"))
            .args(["worker", "--nats", &nats.url()])
            .env("DVM_HOME", shared_home())
            .env_remove("DVM_NATS_TOKEN")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("authorization"),
            "{}",
            show(&out)
        );
        // The worker signs with a deployment key, the one key this queue trusts.
        let dir = tempfile::tempdir().unwrap();
        let deployment = dir.path().join("deploy.key");
        let out = Command::new(env!("CARGO_BIN_EXE_dvm"))
            .args(["cache", "keygen", deployment.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let only_deployment = dvm::nats::NatsConfig::new(&nats.url())
            .with_auth(NatsAuth {
                token: Some("s3cret-token".into()),
                ..NatsAuth::default()
            })
            .with_keys(Keys::new(
                SigningKey::load(&deployment).unwrap(),
                Trust::default(),
            ));
        let queue = rt.block_on(Queue::connect(&only_deployment)).unwrap();
        let _worker = Worker::start(
            &nats,
            "tokened",
            &[
                "--nats-token",
                "s3cret-token",
                "--cache-key-file",
                deployment.to_str().unwrap(),
            ],
        );
        let ran = rt
            .block_on(queue.run(
                &request("python", "print(6 * 7)", Duration::from_secs(30)),
                Duration::from_secs(120),
            ))
            .unwrap();
        assert_eq!(ran.into_outcome().unwrap().stdout, b"42\n");
    }

    #[test]
    fn forged_outcomes_and_cache_entries_on_the_bus_are_refused_and_limits_capped() {
        let nats = Nats::start();
        let rt = runtime();
        let queue = rt.block_on(Queue::connect(&config(&nats))).unwrap();
        let _inside = rt.enter();
        let client = rt.block_on(async_nats::connect(nats.url())).unwrap();
        let js = async_nats::jetstream::new(client);
        let outcomes = rt.block_on(js.get_key_value("DVM_OUTCOMES")).unwrap();

        // Before any worker answers, a forger stores answers: unsigned, then signed by a
        // key nobody trusts.
        let genuine = request("python", "print('genuine')", Duration::from_secs(30));
        rt.block_on(queue.submit(&genuine)).unwrap();
        let unsigned = serde_json::to_vec(&forged_outcome(&genuine.id)).unwrap();
        rt.block_on(outcomes.put(&genuine.id, unsigned.into()))
            .unwrap();
        let waited = rt.block_on(queue.outcome(&genuine.id, Duration::from_secs(3)));
        assert!(waited.is_err(), "an unsigned outcome was returned");
        let dir = tempfile::tempdir().unwrap();
        let stranger = Keys::new(
            SigningKey::create(&dir.path().join("k")).unwrap(),
            Trust::default(),
        );
        let signed = SignedOutcome::sign(&forged_outcome(&genuine.id), &stranger).unwrap();
        rt.block_on(outcomes.put(&genuine.id, signed.into()))
            .unwrap();
        let waited = rt.block_on(queue.outcome(&genuine.id, Duration::from_secs(3)));
        assert!(waited.is_err(), "a stranger's outcome was returned");
        assert!(queue.refused() >= 2);

        // A worker answers in the forger's place, within its own maxima.
        let _worker = Worker::start(&nats, "honest", &["--max-timeout", "3s"]);
        let answer = rt
            .block_on(queue.outcome(&genuine.id, Duration::from_secs(120)))
            .unwrap();
        assert_eq!(answer.worker, "honest");
        assert_eq!(answer.into_outcome().unwrap().stdout, b"genuine\n");

        let started = Instant::now();
        let spin = rt
            .block_on(queue.run(
                &request("python", "while True:\n    pass", Duration::from_secs(600)),
                Duration::from_secs(300),
            ))
            .unwrap()
            .into_outcome()
            .unwrap();
        assert_eq!(spin.limit, Some(dvm::LimitKind::Deadline));
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "a 600 s deadline was not capped at the worker's 3 s: {:?}",
            started.elapsed()
        );

        // A cache entry on the bus, replaced by an unsigned one that prints something else.
        let code = format!(
            "import random\nprint('cached', {}, random.random())",
            std::process::id()
        );
        let deterministic = || {
            let mut r = request("python", &code, Duration::from_secs(30));
            r.seed = Some(11);
            r
        };
        let first = rt
            .block_on(queue.run(&deterministic(), Duration::from_secs(120)))
            .unwrap();
        let ran = first.outcome.as_ref().expect("the run finished");
        assert_eq!(ran.cache, CacheStatus::Miss);
        let key = ran.cache_key.clone().unwrap();
        let genuine_stdout = first.into_outcome().unwrap().stdout;
        let results = rt.block_on(js.get_key_value("DVM_RESULTS")).unwrap();
        let stored = rt.block_on(results.get(&key)).unwrap().unwrap();
        let body = edited_body(&stored, pwn_stdout);
        let unsigned = serde_json::to_vec(&serde_json::json!({
            "digest": blake3::hash(body.as_bytes()).to_hex().to_string(),
            "body": body,
        }))
        .unwrap();
        rt.block_on(results.put(&key, unsigned.into())).unwrap();
        let second = rt
            .block_on(queue.run(&deterministic(), Duration::from_secs(120)))
            .unwrap();
        assert_eq!(
            second.outcome.as_ref().map(|o| o.cache),
            Some(CacheStatus::Miss),
            "the forged entry was a hit"
        );
        assert_eq!(second.into_outcome().unwrap().stdout, genuine_stdout);
    }
}
