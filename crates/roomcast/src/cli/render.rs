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
        if self.json {
            println!("{}", out.json);
        } else {
            for line in &out.text {
                println!("{line}");
            }
        }
    }
}
