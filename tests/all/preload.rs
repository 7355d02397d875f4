//! Sandboxes started from a dvm-made snapshot with numpy and pandas already imported behave
//! exactly like cold ones, and share nothing with each other.

use dvm::{Error, RunInput, Status};

use crate::support::*;

const PROGRAMS: &[&str] = &[
    "print('hello')",
    "import sys\nprint(sys.argv, __name__)",
    "import numpy as np\nprint(np.arange(12).reshape(3, 4).sum(axis=0).tolist())",
    "import pandas as pd\ndf = pd.DataFrame({'k': ['a', 'b', 'a'], 'v': [1, 2, 3]})\n\
     print(df.groupby('k').v.sum().to_dict())",
    "import json, os\nprint(json.dumps(sorted(os.environ)), os.listdir('.'))",
    "raise ValueError('same traceback')",
    "import sys\nsys.exit(4)",
];

#[test]
fn a_snapshot_started_sandbox_behaves_like_a_cold_one() {
    let cold = runtime("python");
    let warm = preloaded_numpy_pandas();
    for program in PROGRAMS {
        let a = run_main(&cold, program, &RunInput::default());
        let b = run_main(&warm, program, &RunInput::default());
        assert_eq!(
            (a.status, a.exit_code, stdout(&a), stderr(&a)),
            (b.status, b.exit_code, stdout(&b), stderr(&b)),
            "{program}"
        );
    }
}

#[test]
fn the_snapshot_skips_the_imports() {
    let source = "import numpy, pandas\nprint(pandas.__version__ > '0')";
    let cold = run_main(&runtime("python"), source, &RunInput::default());
    let warm = run_main(&preloaded_numpy_pandas(), source, &RunInput::default());
    expect_status(&warm, Status::Ok);
    assert_eq!(stdout(&warm), "True\n");
    assert!(
        warm.fuel_used * 20 < cold.fuel_used,
        "preloaded {} fuel vs cold {}",
        warm.fuel_used,
        cold.fuel_used
    );
}

#[test]
fn every_sandbox_draws_its_own_random_numbers() {
    let source = "import random, numpy\nprint(random.random(), numpy.random.rand())";
    let runtime = preloaded_numpy_pandas();
    let first = stdout(&run_main(&runtime, source, &RunInput::default()));
    let second = stdout(&run_main(&runtime, source, &RunInput::default()));
    assert_ne!(first, second);
}

#[test]
fn sandboxes_from_one_snapshot_share_nothing() {
    let runtime = preloaded_numpy_pandas();
    let source = "import numpy\nprint(hasattr(numpy, 'dvm_marker'))\nnumpy.dvm_marker = 1\n\
                  open('/tmp/left.txt', 'w').write('x')\nimport os\nprint(os.listdir('/tmp'))";
    for _ in 0..2 {
        assert_eq!(
            stdout(&run_main(&runtime, source, &RunInput::default())),
            "False\n['left.txt']\n"
        );
    }
}

#[test]
fn bad_preload_requests_are_refused() {
    let quiet: dvm::Progress = std::sync::Arc::new(|_| {});
    for (id, modules) in [
        ("python", vec!["os; import shutil".to_string()]),
        ("javascript", vec!["lodash".to_string()]),
    ] {
        let error = shared()
            .runtime_preloaded(id, &modules, &quiet)
            .err()
            .unwrap();
        assert!(matches!(error, Error::InvalidInput(_)), "{error:?}");
    }
    let error = shared()
        .runtime_preloaded("python", &["no_such_module_dvm".into()], &quiet)
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains("No module named 'no_such_module_dvm'"),
        "{error}"
    );
}
