//! The one place command results are printed: text lines for people, or one
//! line of JSON per result for scripts (`--json`).

use serde_json::Value;

/// What a command shows: the same result as text lines and as JSON.
pub struct Output {
    pub text: Vec<String>,
    pub json: Value,
}

impl Output {
    pub fn new(text: Vec<String>, json: Value) -> Self {
        Self { text, json }
    }

    /// A result that is one line of text.
    pub fn line(text: impl Into<String>, json: Value) -> Self {
        Self::new(vec![text.into()], json)
    }
}

/// Prints outputs on stdout in the format the user chose.
#[derive(Clone, Copy)]
pub struct Renderer {
    json: bool,
}

impl Renderer {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    pub fn print(&self, out: &Output) {
        for line in self.lines(out) {
            println!("{line}");
        }
    }

    /// The lines `print` writes: the text, or the JSON on one line.
    fn lines(&self, out: &Output) -> Vec<String> {
        if self.json {
            vec![out.json.to_string()]
        } else {
            out.text.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_for_people_and_one_line_of_json_for_scripts() {
        let out = Output::new(
            vec!["a  acked  [1]".into(), "b  no ack".into()],
            json!({ "results": [{ "socket_id": "a" }], "complete": true }),
        );
        assert_eq!(
            Renderer::new(false).lines(&out),
            ["a  acked  [1]", "b  no ack"]
        );
        assert_eq!(
            Renderer::new(true).lines(&out),
            [r#"{"complete":true,"results":[{"socket_id":"a"}]}"#]
        );
        let empty = Output::new(Vec::new(), json!({ "rooms": [] }));
        assert!(Renderer::new(false).lines(&empty).is_empty());
        assert_eq!(Renderer::new(true).lines(&empty), [r#"{"rooms":[]}"#]);
    }
}
