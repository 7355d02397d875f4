//! Judge0's status table: the verdict of a submission and how it shows.

use crate::limits::LimitKind;
use crate::outcome::{Outcome, Status};

/// A submission's status: Judge0's table, its ids and descriptions on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) enum Verdict {
    InQueue = 1,
    Processing = 2,
    Accepted = 3,
    WrongAnswer = 4,
    TimeLimitExceeded = 5,
    CompilationError = 6,
    RuntimeErrorSigsegv = 7,
    RuntimeErrorSigxfsz = 8,
    RuntimeErrorSigfpe = 9,
    RuntimeErrorSigabrt = 10,
    RuntimeErrorNzec = 11,
    RuntimeErrorOther = 12,
    InternalError = 13,
    ExecFormatError = 14,
}

impl Verdict {
    /// Every status, in id order (what `/statuses` lists).
    pub(in crate::server) const ALL: [Verdict; 14] = [
        Verdict::InQueue,
        Verdict::Processing,
        Verdict::Accepted,
        Verdict::WrongAnswer,
        Verdict::TimeLimitExceeded,
        Verdict::CompilationError,
        Verdict::RuntimeErrorSigsegv,
        Verdict::RuntimeErrorSigxfsz,
        Verdict::RuntimeErrorSigfpe,
        Verdict::RuntimeErrorSigabrt,
        Verdict::RuntimeErrorNzec,
        Verdict::RuntimeErrorOther,
        Verdict::InternalError,
        Verdict::ExecFormatError,
    ];

    /// Judge0's numeric id.
    pub(in crate::server) fn id(self) -> u32 {
        self as u32
    }

    /// Judge0's description.
    pub(in crate::server) fn description(self) -> &'static str {
        match self {
            Verdict::InQueue => "In Queue",
            Verdict::Processing => "Processing",
            Verdict::Accepted => "Accepted",
            Verdict::WrongAnswer => "Wrong Answer",
            Verdict::TimeLimitExceeded => "Time Limit Exceeded",
            Verdict::CompilationError => "Compilation Error",
            Verdict::RuntimeErrorSigsegv => "Runtime Error (SIGSEGV)",
            Verdict::RuntimeErrorSigxfsz => "Runtime Error (SIGXFSZ)",
            Verdict::RuntimeErrorSigfpe => "Runtime Error (SIGFPE)",
            Verdict::RuntimeErrorSigabrt => "Runtime Error (SIGABRT)",
            Verdict::RuntimeErrorNzec => "Runtime Error (NZEC)",
            Verdict::RuntimeErrorOther => "Runtime Error (Other)",
            Verdict::InternalError => "Internal Error",
            Verdict::ExecFormatError => "Exec Format Error",
        }
    }

    /// Whether the submission has finished (every status past Processing).
    pub(in crate::server) fn is_final(self) -> bool {
        !matches!(self, Verdict::InQueue | Verdict::Processing)
    }

    /// The status as submissions and `/statuses` show it.
    pub(super) fn body(self) -> StatusBody {
        StatusBody {
            id: self.id(),
            description: self.description().to_string(),
        }
    }

    /// The verdict for a run's outcome and the message shown with it; `expected` is the
    /// submission's expected output and `stdout` what it printed.
    pub(in crate::server) fn of(
        outcome: &Outcome,
        expected: Option<&str>,
        stdout: &str,
    ) -> (Verdict, Option<String>) {
        match (outcome.status, outcome.limit) {
            (Status::Limit, Some(LimitKind::Deadline | LimitKind::Fuel)) => (
                Verdict::TimeLimitExceeded,
                Some("Time limit exceeded".to_string()),
            ),
            (Status::Limit, Some(LimitKind::Output | LimitKind::Disk | LimitKind::Files)) => (
                Verdict::RuntimeErrorSigxfsz,
                Some("Output or file size limit exceeded".to_string()),
            ),
            (Status::Limit, Some(LimitKind::Memory | LimitKind::Table)) => (
                Verdict::RuntimeErrorOther,
                Some("Memory limit exceeded".to_string()),
            ),
            (Status::Limit, _) => (
                Verdict::InternalError,
                Some("The run was cancelled".to_string()),
            ),
            (Status::Crashed, _) => (Verdict::RuntimeErrorOther, outcome.trap.clone()),
            (Status::Error, _) => (
                Verdict::RuntimeErrorNzec,
                Some(format!(
                    "Exited with error status {}",
                    outcome.exit_code.unwrap_or(1)
                )),
            ),
            (Status::Ok, _) => match expected {
                Some(expected) if !same_output(expected, stdout) => (Verdict::WrongAnswer, None),
                _ => (Verdict::Accepted, None),
            },
        }
    }
}

/// A status as Judge0 shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Judge0Status)]
pub(in crate::server) struct StatusBody {
    id: u32,
    description: String,
}

/// Judge0's comparison: each line's trailing whitespace, then the whole text's, ignored.
pub(super) fn same_output(expected: &str, actual: &str) -> bool {
    let clean = |text: &str| {
        text.lines()
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end()
            .to_string()
    };
    clean(expected) == clean(actual)
}
