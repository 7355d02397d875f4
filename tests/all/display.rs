//! Rich display output: figures and rich values come back as MIME bundles
//! (`Outcome::display`), within the output caps, from runs and session turns.

use base64::Engine as _;
use dvm::{Limits, RunInput, SessionOptions, Status};

use crate::support::*;

/// The width and height a PNG's header gives, after checking the signature and that the
/// IHDR chunk's CRC matches.
fn png_size(base64: &serde_json::Value) -> (u32, u32) {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64.as_str().expect("image/png is base64 text"))
        .expect("valid base64");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let header = &bytes[16..29];
    let crc = u32::from_be_bytes(bytes[29..33].try_into().unwrap());
    assert_eq!(crc32(&bytes[12..29]), crc, "the IHDR chunk is intact");
    (
        u32::from_be_bytes(header[0..4].try_into().unwrap()),
        u32::from_be_bytes(header[4..8].try_into().unwrap()),
    )
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

const FIGURE: &str = "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n\
    fig, ax = plt.subplots(figsize=(4, 3))\nax.plot([1, 2, 3], [3, 1, 2])\nax.set_title('t')\n";

#[test]
fn a_figure_left_open_and_display_of_a_rich_value_come_back_in_order() {
    let source = format!(
        "{FIGURE}class Rich:\n    def _repr_html_(self):\n        return '<b>rich</b>'\n    \
         def _repr_json_(self):\n        return {{'a': [1, 2]}}\n    def __repr__(self):\n        \
         return 'Rich()'\ndisplay(Rich(), 'plain')\nprint('done')\n"
    );
    let outcome = script("python", "fig.py", &source, &patient());
    expect_status(&outcome, Status::Ok);
    assert_eq!(
        stdout(&outcome),
        "done\n",
        "display writes nothing to stdout"
    );
    let items = &outcome.display;
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items[0].data["text/html"], "<b>rich</b>");
    assert_eq!(
        items[0].data["application/json"],
        serde_json::json!({"a": [1, 2]})
    );
    assert_eq!(items[0].data["text/plain"], "Rich()");
    assert_eq!(items[1].data.len(), 1);
    assert_eq!(items[1].data["text/plain"], "'plain'");
    // The figure, left open, is shown at the end: 4 x 3 inches at 100 dpi.
    assert_eq!(png_size(&items[2].data["image/png"]), (400, 300));
    assert!(!outcome.truncated.display);
    assert!(outcome.to_json()["display"].is_array());
}

#[test]
fn a_session_shows_figures_and_rich_final_expressions_and_still_echoes_them() {
    let session = runtime("python")
        .session(SessionOptions::default())
        .unwrap();
    let input = patient();
    let quiet = session.run("x = 1\nx + 1", &input).unwrap();
    assert_eq!(stdout(&quiet), "2\n");
    assert!(quiet.display.is_empty(), "plain values are only echoed");

    let shown = session.run(&format!("{FIGURE}plt.show()"), &input).unwrap();
    expect_status(&shown, Status::Ok);
    assert!(stderr(&shown).is_empty(), "{}", describe(&shown));
    assert_eq!(shown.display.len(), 1, "{:?}", shown.display);
    assert_eq!(png_size(&shown.display[0].data["image/png"]), (400, 300));
    // Shown once: the next turn has nothing left open.
    assert!(session.run("1", &input).unwrap().display.is_empty());

    let table = session
        .run(
            "import pandas as pd\ndf = pd.DataFrame({'city': ['Oslo', 'Lima'], 'n': [3, 5]})\ndf",
            &input,
        )
        .unwrap();
    expect_status(&table, Status::Ok);
    assert!(stdout(&table).contains("Oslo"), "{}", describe(&table));
    assert_eq!(table.display.len(), 1);
    let html = table.display[0].data["text/html"].as_str().unwrap();
    assert!(
        html.contains("<table") && html.contains("<td>Oslo</td>"),
        "{html}"
    );
    assert!(
        table.display[0].data["text/plain"]
            .as_str()
            .unwrap()
            .contains("Lima")
    );
}

#[test]
fn display_is_held_to_the_output_cap_and_hostile_frames_are_refused() {
    let input = limits(|l: &mut Limits| l.stdout_bytes = 4096);
    let source = "for i in range(100):\n    display('x' * 200)\nprint('survived')\n";
    let outcome = script("python", "many.py", source, &input);
    expect_status(&outcome, Status::Ok);
    assert_eq!(stdout(&outcome), "survived\n");
    assert!(outcome.truncated.display);
    assert!(!outcome.display.is_empty() && outcome.display.len() < 100);
    let kept: usize = outcome
        .display
        .iter()
        .map(|item| serde_json::to_vec(&item.data).unwrap().len())
        .sum();
    assert!(
        kept <= 4096,
        "{kept} bytes of display kept past a 4096-byte cap"
    );

    // Frames a guest forges: a PNG that is not base64, only unknown types, not JSON, a
    // request past the guest's memory. None is kept and the guest goes on.
    let source = r#"
import _host, json
def send(frame):
    try:
        return _host.call(frame)
    except OSError as error:
        return type(error).__name__
print(send(json.dumps({"v": 1, "op": "display", "data": {"image/png": "%%%"}}).encode()))
print(send(json.dumps({"v": 1, "op": "display", "data": {"x/evil": "a"}}).encode()))
print(send(b"{not json"))
print(send(json.dumps({"v": 1, "op": "display", "data": {"text/plain": 5}}).encode()))
"#;
    let outcome = script("python", "forge.py", source, &RunInput::default());
    expect_status(&outcome, Status::Ok);
    assert!(outcome.display.is_empty(), "{:?}", outcome.display);
    assert_eq!(
        stdout(&outcome),
        "b'{\"ok\":false,\"error\":\"not a display item\"}'\n".repeat(2)
            + "ConnectionRefusedError\n"
            + "b'{\"ok\":false,\"error\":\"not a display item\"}'\n"
    );
}

/// `dvm run --display DIR` writes each form to a file of its own; a link planted where one
/// goes is replaced, never written through.
#[test]
fn the_command_line_writes_each_form_to_a_file_and_follows_no_link() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shown");
    std::fs::create_dir(&out).unwrap();
    let honeypot = dir.path().join("honeypot.txt");
    std::fs::write(&honeypot, "untouched").unwrap();
    std::os::unix::fs::symlink(&honeypot, out.join("display-1.txt")).unwrap();
    let script = dir.path().join("fig.py");
    std::fs::write(&script, format!("{FIGURE}display('hello')\n")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dvm"))
        .args(["run", "--in-process", "--display"])
        .arg(&out)
        .arg(&script)
        .env("DVM_HOME", shared_home())
        .env_remove("DVM_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(std::fs::read_to_string(&honeypot).unwrap(), "untouched");
    assert_eq!(
        std::fs::read_to_string(out.join("display-1.txt")).unwrap(),
        "'hello'"
    );
    let png = std::fs::read(out.join("display-2.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(out.join("display-2.txt").exists());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--display: 3 files in"));
}
