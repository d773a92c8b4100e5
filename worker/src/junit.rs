//! JUnit XML, the format Jenkins' `junit` step reads: test suites of test
//! cases, each passed, failed (with a message and details) or skipped.
//! Pure rendering; callers decide what a test case is.

use quick_xml::escape::escape;
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Dotted group, shown by Jenkins as package.class.
    pub classname: String,
    pub name: String,
    pub seconds: f64,
    pub outcome: Outcome,
    /// Captured output, attached as `<system-out>`.
    pub output: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    Failed { message: String, details: String },
    Skipped { message: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    pub name: String,
    pub cases: Vec<Case>,
}

/// XML 1.0 cannot carry most control characters, even escaped: they are
/// replaced so a binary byte in a test's output never breaks the file.
fn text(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => '\u{FFFD}',
            c => c,
        })
        .collect();
    escape(clean.as_str()).into_owned()
}

pub fn render(suites: &[Suite]) -> String {
    render_with_properties(suites, &[])
}

/// As [`render`], every suite with these `<properties>` (name, value):
/// e.g. `url`, the status page of the run the suites are of.
pub fn render_with_properties(suites: &[Suite], properties: &[(&str, &str)]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for suite in suites {
        let failures = suite
            .cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failed { .. }))
            .count();
        let skipped = suite
            .cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Skipped { .. }))
            .count();
        // A fold from 0.0: `sum` of no f64 is -0.0, "-0.000" in the file.
        let time = suite.cases.iter().fold(0.0, |t, c| t + c.seconds);
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\">",
            text(&suite.name),
            suite.cases.len()
        );
        if !properties.is_empty() {
            out.push_str("    <properties>\n");
            for (name, value) in properties {
                let _ = writeln!(
                    out,
                    "      <property name=\"{}\" value=\"{}\"/>",
                    text(name),
                    text(value)
                );
            }
            out.push_str("    </properties>\n");
        }
        for case in &suite.cases {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                text(&case.classname),
                text(&case.name),
                case.seconds
            );
            if case.outcome == Outcome::Passed && case.output.is_none() {
                out.push_str("/>\n");
                continue;
            }
            out.push_str(">\n");
            match &case.outcome {
                Outcome::Passed => {}
                Outcome::Failed { message, details } => {
                    let _ = writeln!(
                        out,
                        "      <failure message=\"{}\">{}</failure>",
                        text(message),
                        text(details)
                    );
                }
                Outcome::Skipped { message } => {
                    let _ = writeln!(out, "      <skipped message=\"{}\"/>", text(message));
                }
            }
            if let Some(output) = &case.output {
                let _ = writeln!(out, "      <system-out>{}</system-out>", text(output));
            }
            out.push_str("    </testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_passed_failed_and_skipped_cases_escaped() {
        let suites = [Suite {
            name: "patchline run 7".into(),
            cases: vec![
                Case {
                    classname: "hello.el9".into(),
                    name: "requires".into(),
                    seconds: 0.25,
                    outcome: Outcome::Passed,
                    output: None,
                },
                Case {
                    classname: "hello.el9".into(),
                    name: "lint <&>".into(),
                    seconds: 1.0,
                    outcome: Outcome::Failed {
                        message: "exit status 1".into(),
                        details: "E: \"bad\" \u{1b}[0m".into(),
                    },
                    output: Some("out & err".into()),
                },
                Case {
                    classname: "hello.el9".into(),
                    name: "smoke".into(),
                    seconds: 0.0,
                    outcome: Outcome::Skipped {
                        message: "build failed".into(),
                    },
                    output: None,
                },
            ],
        }];
        let xml = render(&suites);
        assert!(xml.contains(r#"<testsuite name="patchline run 7" tests="3" failures="1" errors="0" skipped="1" time="1.250">"#), "{xml}");
        assert!(xml.contains(r#"<testcase classname="hello.el9" name="requires" time="0.250"/>"#));
        assert!(xml.contains(r#"name="lint &lt;&amp;&gt;""#));
        assert!(
            xml.contains(
                "<failure message=\"exit status 1\">E: &quot;bad&quot; \u{FFFD}[0m</failure>"
            ),
            "{xml}"
        );
        assert!(xml.contains("<system-out>out &amp; err</system-out>"));
        assert!(xml.contains(r#"<skipped message="build failed"/>"#));
        assert!(!xml.contains("<properties>"));
        let linked = render_with_properties(&suites, &[("url", "/ui/runs/7?a=1&b=<2>")]);
        assert!(
            linked.contains("time=\"1.250\">\n    <properties>\n      <property name=\"url\" value=\"/ui/runs/7?a=1&amp;b=&lt;2&gt;\"/>\n    </properties>\n    <testcase "),
            "{linked}"
        );
        // Well-formed: every element read back by an XML parser.
        let mut reader = quick_xml::Reader::from_str(&linked);
        let mut depth = 0i32;
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Start(_)) => depth += 1,
                Ok(quick_xml::events::Event::End(_)) => depth -= 1,
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!("invalid XML: {e}\n{linked}"),
            }
        }
        assert_eq!(depth, 0);
    }
}
