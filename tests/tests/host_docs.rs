//! Host tier: what the docs say about the two VM kernels holds. docs/connection-behavior.md and
//! docs/reliability.md each carry one generated section per kernel (written by the VM tier on that
//! kernel) and say in prose that 6.1 and 6.12 agree; this fails when the sections differ in more
//! than the kernel they name, so the prose is corrected together with the tables.

use std::path::Path;

const KERNELS: [&str; 2] = ["6.1", "6.12"];

/// The generated section of `doc` for `series`, with the kernel's name taken out.
fn section(doc: &str, tag: &str, series: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(doc);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {doc}: {err}"));
    let begin = format!("<!-- {tag} linux-{series}:begin");
    let end = format!("<!-- {tag} linux-{series}:end -->");
    let start = text.find(&begin).unwrap_or_else(|| panic!("{doc}: no {begin}"));
    let start = start + text[start..].find("-->").expect("the marker ends") + 3;
    let stop = text.find(&end).unwrap_or_else(|| panic!("{doc}: no {end}"));
    assert!(stop > start, "{doc}: the {series} markers are out of order");
    let section = text[start..stop].trim();
    assert!(!section.is_empty(), "{doc}: the Linux {series} section is empty (BLESS=1 fills it)");
    section.replace(&format!("Linux {series} "), "Linux X ")
}

fn assert_kernels_agree(doc: &str, tag: &str) {
    let [first, second] = KERNELS.map(|series| section(doc, tag, series));
    let differing: Vec<String> = first
        .lines()
        .zip(second.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("- {}: {a}\n+ {}: {b}", KERNELS[0], KERNELS[1]))
        .collect();
    assert!(
        differing.is_empty() && first.lines().count() == second.lines().count(),
        "{doc} says Linux 6.1 and 6.12 agree, but their sections differ; correct the prose:\n{}",
        differing.join("\n")
    );
}

#[test]
fn the_connection_behaviour_tables_agree_on_both_kernels_as_the_doc_says() {
    assert_kernels_agree("docs/connection-behavior.md", "behavior-matrix");
}

#[test]
fn the_reliability_verdicts_agree_on_both_kernels_as_the_doc_says() {
    assert_kernels_agree("docs/reliability.md", "reliability");
}
