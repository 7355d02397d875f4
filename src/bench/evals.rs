//! The eval-throughput suite of `dvm bench`: small programs with their tests, HumanEval-sized,
//! each also in a broken variant whose tests fail, run the way an evaluation harness runs
//! generated code: every program in a fresh interpreter. Measured through the library, through
//! `dvm serve` (by the command line) and with native python3 started once per program, on one
//! thread and on every core.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::error::Error;

/// One problem: a solution, a broken solution, and tests that pass only for the first.
struct Problem {
    solution: &'static str,
    broken: &'static str,
    tests: &'static str,
}

const PROBLEMS: &[Problem] = &[
    Problem {
        solution: "from typing import List\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n    ordered = sorted(numbers)\n    return any(b - a < threshold for a, b in zip(ordered, ordered[1:]))\n",
        broken: "from typing import List\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n    return any(abs(b - a) < threshold for a, b in zip(numbers, numbers[1:]))\n",
        tests: "assert has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)\nassert not has_close_elements([1.0, 2.0, 3.0], 0.5)\nassert has_close_elements([1.0, 2.0, 5.9, 4.0, 5.0], 0.95)\n",
    },
    Problem {
        solution: "from typing import List\n\ndef separate_paren_groups(s: str) -> List[str]:\n    groups, depth, current = [], 0, ''\n    for c in s:\n        if c == ' ':\n            continue\n        current += c\n        depth += 1 if c == '(' else -1\n        if depth == 0:\n            groups.append(current)\n            current = ''\n    return groups\n",
        broken: "from typing import List\n\ndef separate_paren_groups(s: str) -> List[str]:\n    return [g + ')' for g in s.replace(' ', '').split(')') if g]\n",
        tests: "assert separate_paren_groups('( ) (( )) (( )( ))') == ['()', '(())', '(()())']\nassert separate_paren_groups('() (()) ((())) (((())))') == ['()', '(())', '((()))', '(((())))']\n",
    },
    Problem {
        solution: "def below_zero(operations):\n    balance = 0\n    for op in operations:\n        balance += op\n        if balance < 0:\n            return True\n    return False\n",
        broken: "def below_zero(operations):\n    return sum(operations) < 0\n",
        tests: "assert not below_zero([])\nassert not below_zero([1, 2, -3, 1, 2, -3])\nassert below_zero([1, 2, -4, 5, 6])\n",
    },
    Problem {
        solution: "import statistics\n\ndef mean_absolute_deviation(numbers):\n    mean = statistics.fmean(numbers)\n    return sum(abs(x - mean) for x in numbers) / len(numbers)\n",
        broken: "import statistics\n\ndef mean_absolute_deviation(numbers):\n    return statistics.pstdev(numbers)\n",
        tests: "assert abs(mean_absolute_deviation([1.0, 2.0, 3.0]) - 2.0 / 3.0) < 1e-6\nassert abs(mean_absolute_deviation([1.0, 2.0, 3.0, 4.0]) - 1.0) < 1e-6\n",
    },
    Problem {
        solution: "def intersperse(numbers, delimiter):\n    out = []\n    for i, n in enumerate(numbers):\n        if i:\n            out.append(delimiter)\n        out.append(n)\n    return out\n",
        broken: "def intersperse(numbers, delimiter):\n    out = []\n    for n in numbers:\n        out += [n, delimiter]\n    return out\n",
        tests: "assert intersperse([], 7) == []\nassert intersperse([5, 6, 3, 2], 8) == [5, 8, 6, 8, 3, 8, 2]\nassert intersperse([2, 2, 2], 2) == [2, 2, 2, 2, 2]\n",
    },
    Problem {
        solution: "import re\n\ndef count_words(text):\n    return len(re.findall(r\"[A-Za-z']+\", text))\n",
        broken: "def count_words(text):\n    return len(text.split(' '))\n",
        tests: "assert count_words('hello world') == 2\nassert count_words('  spaced   out  ') == 2\nassert count_words(\"it's a dog's life\") == 4\n",
    },
    Problem {
        solution: "from collections import Counter\n\ndef most_common_letter(text):\n    counts = Counter(c for c in text.lower() if c.isalpha())\n    best = max(counts.values())\n    return min(c for c, n in counts.items() if n == best)\n",
        broken: "from collections import Counter\n\ndef most_common_letter(text):\n    return Counter(text).most_common(1)[0][0]\n",
        tests: "assert most_common_letter('Hello World') == 'l'\nassert most_common_letter('aabbc') == 'a'\nassert most_common_letter('zzy yy') == 'y'\nassert most_common_letter('AAb a') == 'a'\n",
    },
    Problem {
        solution: "def is_palindrome(s):\n    cleaned = [c.lower() for c in s if c.isalnum()]\n    return cleaned == cleaned[::-1]\n",
        broken: "def is_palindrome(s):\n    return s == s[::-1]\n",
        tests: "assert is_palindrome('A man, a plan, a canal: Panama')\nassert not is_palindrome('race a car')\nassert is_palindrome('')\n",
    },
    Problem {
        solution: "import heapq\n\ndef k_smallest(numbers, k):\n    return heapq.nsmallest(k, numbers)\n",
        broken: "def k_smallest(numbers, k):\n    return sorted(numbers)[1:k + 1]\n",
        tests: "assert k_smallest([5, 1, 4, 2, 3], 2) == [1, 2]\nassert k_smallest([9, 8, 7], 3) == [7, 8, 9]\nassert k_smallest([], 0) == []\n",
    },
    Problem {
        solution: "from functools import lru_cache\n\n@lru_cache(maxsize=None)\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
        broken: "def fib(n):\n    a, b = 1, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
        tests: "assert fib(0) == 0\nassert fib(10) == 55\nassert fib(80) == 23416728348467685\n",
    },
    Problem {
        solution: "import bisect\n\ndef insert_position(sorted_list, value):\n    return bisect.bisect_left(sorted_list, value)\n",
        broken: "import bisect\n\ndef insert_position(sorted_list, value):\n    return bisect.bisect_right(sorted_list, value)\n",
        tests: "assert insert_position([1, 3, 5, 6], 5) == 2\nassert insert_position([1, 3, 5, 6], 2) == 1\nassert insert_position([1, 3, 3, 3], 3) == 1\n",
    },
    Problem {
        solution: "def rotate(matrix):\n    return [list(row) for row in zip(*matrix[::-1])]\n",
        broken: "def rotate(matrix):\n    return [list(row) for row in zip(*matrix)]\n",
        tests: "assert rotate([[1, 2], [3, 4]]) == [[3, 1], [4, 2]]\nassert rotate([[1]]) == [[1]]\nassert rotate([[1, 2, 3], [4, 5, 6], [7, 8, 9]])[0] == [7, 4, 1]\n",
    },
    Problem {
        solution: "import itertools\n\ndef pair_sums(numbers, target):\n    return sorted({tuple(sorted(p)) for p in itertools.combinations(numbers, 2) if sum(p) == target})\n",
        broken: "import itertools\n\ndef pair_sums(numbers, target):\n    return [p for p in itertools.permutations(numbers, 2) if sum(p) == target]\n",
        tests: "assert pair_sums([1, 2, 3, 4, 5], 6) == [(1, 5), (2, 4)]\nassert pair_sums([3, 3], 6) == [(3, 3)]\nassert pair_sums([], 1) == []\n",
    },
    Problem {
        solution: "from dataclasses import dataclass\n\n@dataclass(frozen=True)\nclass Point:\n    x: int\n    y: int\n\ndef manhattan(a: Point, b: Point) -> int:\n    return abs(a.x - b.x) + abs(a.y - b.y)\n",
        broken: "from dataclasses import dataclass\n\n@dataclass(frozen=True)\nclass Point:\n    x: int\n    y: int\n\ndef manhattan(a: Point, b: Point) -> int:\n    return (a.x - b.x) + (a.y - b.y)\n",
        tests: "assert manhattan(Point(0, 0), Point(3, 4)) == 7\nassert manhattan(Point(5, 5), Point(1, 2)) == 7\nassert len({Point(1, 2), Point(1, 2)}) == 1\n",
    },
    Problem {
        solution: "import json\n\ndef merge_json(a, b):\n    merged = {**json.loads(a), **json.loads(b)}\n    return json.dumps(merged, sort_keys=True)\n",
        broken: "import json\n\ndef merge_json(a, b):\n    return json.dumps({**json.loads(b), **json.loads(a)}, sort_keys=True)\n",
        tests: "assert merge_json('{\"a\": 1}', '{\"b\": 2}') == '{\"a\": 1, \"b\": 2}'\nassert merge_json('{\"a\": 1}', '{\"a\": 3}') == '{\"a\": 3}'\n",
    },
    Problem {
        solution: "def roman(n):\n    table = [(1000, 'M'), (900, 'CM'), (500, 'D'), (400, 'CD'), (100, 'C'), (90, 'XC'),\n             (50, 'L'), (40, 'XL'), (10, 'X'), (9, 'IX'), (5, 'V'), (4, 'IV'), (1, 'I')]\n    out = ''\n    for value, letters in table:\n        while n >= value:\n            out += letters\n            n -= value\n    return out\n",
        broken: "def roman(n):\n    table = [(1000, 'M'), (500, 'D'), (100, 'C'), (50, 'L'), (10, 'X'), (5, 'V'), (1, 'I')]\n    out = ''\n    for value, letters in table:\n        while n >= value:\n            out += letters\n            n -= value\n    return out\n",
        tests: "assert roman(1994) == 'MCMXCIV'\nassert roman(58) == 'LVIII'\nassert roman(4) == 'IV'\n",
    },
    Problem {
        solution: "import math\n\ndef primes_below(n):\n    return [p for p in range(2, n) if all(p % d for d in range(2, math.isqrt(p) + 1))]\n",
        broken: "def primes_below(n):\n    return [p for p in range(2, n) if p % 2 or p == 2]\n",
        tests: "assert primes_below(20) == [2, 3, 5, 7, 11, 13, 17, 19]\nassert primes_below(2) == []\nassert len(primes_below(1000)) == 168\n",
    },
    Problem {
        solution: "def flatten(nested):\n    out = []\n    for item in nested:\n        if isinstance(item, list):\n            out.extend(flatten(item))\n        else:\n            out.append(item)\n    return out\n",
        broken: "def flatten(nested):\n    return [x for item in nested for x in (item if isinstance(item, list) else [item])]\n",
        tests: "assert flatten([1, [2, [3, 4]], 5]) == [1, 2, 3, 4, 5]\nassert flatten([]) == []\nassert flatten([[[]]]) == []\n",
    },
    Problem {
        solution: "from datetime import date\n\ndef days_between(a, b):\n    return abs((date.fromisoformat(b) - date.fromisoformat(a)).days)\n",
        broken: "from datetime import date\n\ndef days_between(a, b):\n    return (date.fromisoformat(b) - date.fromisoformat(a)).days\n",
        tests: "assert days_between('2024-01-01', '2024-03-01') == 60\nassert days_between('2024-03-01', '2024-01-01') == 60\n",
    },
    Problem {
        solution: "from fractions import Fraction\n\ndef harmonic(n):\n    return sum(Fraction(1, k) for k in range(1, n + 1))\n",
        broken: "def harmonic(n):\n    return sum(1 / k for k in range(1, n + 1))\n",
        tests: "from fractions import Fraction\nassert harmonic(1) == 1\nassert harmonic(4) == Fraction(25, 12)\nassert isinstance(harmonic(3), Fraction)\n",
    },
];

/// One program of the suite: its source and whether its tests should pass.
pub struct Program {
    pub source: String,
    pub passes: bool,
}

/// Every problem twice: the solution (tests pass, exit 0) and the broken variant (an
/// assertion fails, exit 1).
pub fn suite() -> Vec<Program> {
    let mut programs = Vec::with_capacity(PROBLEMS.len() * 2);
    for problem in PROBLEMS {
        for (code, passes) in [(problem.solution, true), (problem.broken, false)] {
            programs.push(Program {
                source: format!("{code}\n\n{}\nprint('passed')\n", problem.tests),
                passes,
            });
        }
    }
    programs
}

/// Throughput of one way of running the suite.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalRow {
    /// How the programs ran, e.g. `library`, `dvm serve`, `native python3`.
    pub how: String,
    /// Programs per second on one thread (one client).
    pub one_thread: f64,
    /// Programs per second with one thread (client) per core.
    pub all_cores: f64,
    pub threads: usize,
    /// Programs whose verdict (tests passed or failed) was not the expected one.
    pub wrong: usize,
}

/// Runs `programs` `rounds` times through `run` (which says whether the tests passed) on one
/// thread and on `threads`, and counts wrong verdicts.
pub fn throughput(
    how: &str,
    programs: &[Program],
    rounds: usize,
    threads: usize,
    run: &(dyn Fn(&Program) -> Result<bool, Error> + Sync),
) -> Result<EvalRow, Error> {
    let total = programs.len() * rounds.max(1);
    let wrong = AtomicUsize::new(0);
    let work = |next: &AtomicUsize| -> Result<(), Error> {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= total {
                return Ok(());
            }
            let program = &programs[i % programs.len()];
            if run(program)? != program.passes {
                wrong.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    // One warm-up pass of the suite so neither side pays its first-use costs in the timing.
    for program in programs {
        run(program)?;
    }
    let started = Instant::now();
    work(&AtomicUsize::new(0))?;
    let one_thread = total as f64 / started.elapsed().as_secs_f64();

    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<(), Error> {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| scope.spawn(|| work(&next)))
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| crate::error::HostError::Stopped {
                    what: "an eval thread".into(),
                })??;
        }
        Ok(())
    })?;
    let all_cores = total as f64 / started.elapsed().as_secs_f64();
    Ok(EvalRow {
        how: how.to_string(),
        one_thread,
        all_cores,
        threads,
        wrong: wrong.into_inner() / 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_python_gives_every_program_its_expected_verdict() {
        let python = std::path::Path::new("/usr/bin/python3");
        if !python.is_file() {
            return;
        }
        for (i, program) in suite().iter().enumerate() {
            let status = std::process::Command::new(python)
                .args(["-c", &program.source])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("python3 starts");
            assert_eq!(
                status.success(),
                program.passes,
                "program {i}:\n{}",
                program.source
            );
        }
    }

    #[test]
    fn the_suite_pairs_every_solution_with_a_broken_one() {
        let programs = suite();
        assert_eq!(programs.len(), PROBLEMS.len() * 2);
        assert_eq!(programs.iter().filter(|p| p.passes).count(), PROBLEMS.len());
        for program in &programs {
            assert!(program.source.contains("assert"));
        }
    }
}
