//! The Judge0 language ids dvm runs and the runtime each runs on.

/// (Judge0 id, dvm runtime, the name `/languages` shows). The file a submission's source is
/// saved as comes from the runtime's language: see [`source_file`].
pub(super) const LANGUAGES: &[(u32, &str, &str)] = &[
    (63, "javascript", "JavaScript (QuickJS-NG 0.17, dvm)"),
    (71, "python", "Python (3.15, dvm)"),
    (92, "python", "Python (3.15, dvm)"),
    (93, "javascript", "JavaScript (QuickJS-NG 0.17, dvm)"),
    (97, "javascript", "JavaScript (QuickJS-NG 0.17, dvm)"),
    (100, "python", "Python (3.15, dvm)"),
    (102, "javascript", "JavaScript (QuickJS-NG 0.17, dvm)"),
    (109, "python", "Python (3.15, dvm)"),
    (113, "python", "Python (3.15, dvm)"),
];

pub(super) fn language(id: u32) -> Option<&'static (u32, &'static str, &'static str)> {
    LANGUAGES.iter().find(|(n, ..)| *n == id)
}

/// The file name a submission's source gets in `runtime`: its language's default script
/// (`main.py`, `main.mjs`), the name every other surface gives inline code. Every runtime in
/// [`LANGUAGES`] is in the embedded catalogue (a test checks it); Python's name stands in for
/// one that is not.
pub(super) fn source_file(runtime: &str) -> &'static str {
    let language = crate::Catalog::embedded()
        .get(runtime)
        .map_or(crate::Language::Python, |spec| spec.language);
    language.default_script()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_judge0_runtime_is_in_the_catalogue_with_its_script_name() {
        for (id, runtime, _) in LANGUAGES {
            let spec = crate::Catalog::embedded().get(runtime);
            assert!(
                spec.is_some(),
                "language {id} runs on {runtime}, not in the catalogue"
            );
        }
        assert_eq!(source_file("python"), "main.py");
        assert_eq!(source_file("javascript"), "main.mjs");
    }
}
