//! Times session snapshots, resumes and forks of a python session holding a DataFrame of
//! about `MIB` MiB (default 50): `cargo run --release --example session_copies [MIB]`.
//! Also reports the bytes ten snapshots of forks that each changed one variable add to the
//! store, against the first snapshot's.

use std::time::Instant;

fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

fn main() -> Result<(), dvm::Error> {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let dvm = dvm::Dvm::new(dvm::Config::default())?;
    let home = dvm.config().home.clone();
    let python = dvm.runtime("python")?;
    let session = python.session(dvm::SessionOptions::default())?;
    let input = dvm::RunInput {
        limits: dvm::Limits {
            memory_bytes: 2 << 30,
            ..dvm::Limits::default()
        },
        ..dvm::RunInput::default()
    };
    let rows = mib * (1 << 20) / 8 / 4;
    let setup = format!(
        "import numpy as np, pandas as pd\n\
         df = pd.DataFrame(np.random.default_rng(1).random(({rows}, 4)), columns=list('abcd'))\n\
         print(round(df.memory_usage().sum() / 2**20, 1), 'MiB DataFrame')"
    );
    let made = session.run(&setup, &input)?;
    print!("{}", String::from_utf8_lossy(&made.stdout));
    let blobs = home.join("store/v1/blobs");
    let before = dir_bytes(&blobs);
    let started = Instant::now();
    let id = session.snapshot()?;
    let snapshot_ms = ms(started);
    let first = dir_bytes(&blobs) - before;
    let started = Instant::now();
    let resumed = python.resume(&id)?;
    let resume_ms = ms(started);
    let check = resumed.run("print(df.shape)", &input)?;
    print!("resumed: {}", String::from_utf8_lossy(&check.stdout));
    // A second `Dvm` holds no image of the snapshot: it reads the store, as after a restart.
    let other = dvm::Dvm::new(dvm::Config::default())?;
    let other_python = other.runtime("python")?;
    // Its first session sets up the engine sessions run on, as a restarted server's would.
    other_python
        .session(dvm::SessionOptions::default())?
        .close();
    let started = Instant::now();
    let from_store = other_python.resume(&id)?;
    let from_store_ms = ms(started);
    let started = Instant::now();
    let again = other_python.resume(&id)?;
    let again_from_store_ms = ms(started);
    let check = from_store.run("print(df.shape)", &input)?;
    print!(
        "resumed from the store: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    drop((from_store, again));
    session.run("later = 2", &input)?;
    let started = Instant::now();
    let later_id = session.snapshot()?;
    let later_snapshot_ms = ms(started);
    println!(
        "resume from the store {from_store_ms:.1} ms, then again {again_from_store_ms:.1} ms; \
         a snapshot after one more call {later_snapshot_ms:.1} ms"
    );
    let started = Instant::now();
    let one = session.fork(1)?;
    let fork_ms = ms(started);
    let started = Instant::now();
    let again = session.fork(1)?;
    let again_ms = ms(started);
    session.run("after = 1", &input)?;
    let started = Instant::now();
    let after_turn = session.fork(1)?;
    let after_turn_ms = ms(started);
    let started = Instant::now();
    let first_turn = after_turn[0].run("print(round(df.a.sum()))", &input)?;
    let first_turn_ms = ms(started);
    let started = Instant::now();
    session.run("print(round(df.a.sum()))", &input)?;
    let parent_turn_ms = ms(started);
    print!(
        "fork's first turn: {}",
        String::from_utf8_lossy(&first_turn.stdout)
    );
    println!(
        "fork again {again_ms:.1} ms; fork after a turn {after_turn_ms:.1} ms; a turn reading \
         the DataFrame: {first_turn_ms:.1} ms in the fork, {parent_turn_ms:.1} ms in the session"
    );
    drop((again, after_turn));
    let started = Instant::now();
    let ten = session.fork(10)?;
    let fork10_ms = ms(started);
    let before_ten = dir_bytes(&blobs);
    let mut ids = vec![id, later_id];
    for (n, fork) in ten.iter().enumerate() {
        fork.run(&format!("changed = {n}"), &input)?;
        ids.push(fork.snapshot()?);
    }
    let ten_bytes = dir_bytes(&blobs) - before_ten;
    println!(
        "snapshot {snapshot_ms:.1} ms ({:.1} MiB stored); resume {resume_ms:.1} ms; fork {fork_ms:.1} ms; \
         ten forks {fork10_ms:.1} ms ({:.1} ms each); ten snapshots of forks that changed one variable: \
         {:.2} MiB more ({:.3} MiB each)",
        first as f64 / 1048576.0,
        fork10_ms / 10.0,
        ten_bytes as f64 / 1048576.0,
        ten_bytes as f64 / 1048576.0 / 10.0
    );
    drop(one);
    // A session never copied before: its first fork freezes all it has written.
    let plain = python.session(dvm::SessionOptions::default())?;
    plain.run(&setup, &input)?;
    let started = Instant::now();
    let plain_fork = plain.fork(1)?;
    println!(
        "first fork of a session never snapshotted {:.1} ms",
        ms(started)
    );
    drop((plain_fork, plain));
    for id in ids {
        dvm::delete_session_snapshot(&home, &id)?;
    }
    Ok(())
}
