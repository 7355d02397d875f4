//! PEP 723 inline script metadata.

use serde::Deserialize;

use super::spec::{self, PythonRequirement};
use crate::error::Error;

/// The `dependencies` of a PEP 723 `# /// script` block, if the source has one.
pub fn parse_inline_metadata(source: &str) -> Result<Vec<String>, Error> {
    let mut lines = source.lines();
    let Some(_) = lines
        .by_ref()
        .find(|line| line.trim_end() == "# /// script")
    else {
        return Ok(Vec::new());
    };
    let mut toml_text = String::new();
    let mut closed = false;
    for line in lines {
        if line.trim_end() == "# ///" {
            closed = true;
            break;
        }
        let content = line
            .strip_prefix("# ")
            .or_else(|| (line.trim_end() == "#").then_some(""))
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "the script's `# /// script` block has a line that is not a comment: {line:?}"
                ))
            })?;
        toml_text.push_str(content);
        toml_text.push('\n');
    }
    if !closed {
        return Err(Error::InvalidInput(
            "the script's `# /// script` block is not closed by a `# ///` line".into(),
        ));
    }
    #[derive(Deserialize)]
    struct Metadata {
        #[serde(default)]
        dependencies: Vec<String>,
    }
    let metadata: Metadata = toml::from_str(&toml_text).map_err(|e| {
        Error::InvalidInput(format!(
            "the script's `# /// script` block is not valid TOML: {e}"
        ))
    })?;
    metadata
        .dependencies
        .iter()
        .map(|text| {
            PythonRequirement::parse(text)
                .map(|requirement| requirement.to_string())
                .map_err(|e| spec::from_origin(e, "the script's `# /// script` block"))
        })
        .collect()
}
