//! The model's chat template (`tokenizer.chat_template`, Jinja), rendered with minijinja and
//! Python-compatible string methods. A template is code that comes with a model file: it gets no
//! file or environment access (minijinja has none), and a fuel limit bounds its running time and
//! so its output.

use minijinja::{Environment, Error, ErrorKind, context};
use serde::{Deserialize, Serialize};

/// ChatML, for models whose file carries no template.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Instructions a render may execute: enough for thousands of turns, not for a runaway loop.
const FUEL: u64 = 5_000_000;

/// One turn of a conversation as templates expect it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub role: String,
    pub content: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the chat template does not compile: {0}")]
    Invalid(String),
    #[error("the chat template failed on this conversation: {0}")]
    Render(String),
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| TemplateError::Invalid(e.to_string()))?;
        Ok(Self {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// The prompt text for `turns`, ending where the assistant's answer begins.
    pub fn render(&self, turns: &[Turn]) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError::Invalid(e.to_string()))?;
        template
            .render(context! {
                messages => turns,
                add_generation_prompt => true,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| TemplateError::Render(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: &str, content: &str) -> Turn {
        Turn {
            role: role.to_owned(),
            content: content.to_owned(),
        }
    }

    #[test]
    fn chatml_renders_with_the_generation_prompt() {
        let template = ChatTemplate::new(CHATML, "", "").unwrap();
        let text = template
            .render(&[turn("system", "Be brief."), turn("user", "Hi")])
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let source = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first turn must be the user') }}{% endif %}{{ bos_token }}{{ messages[0]['content'].strip().upper() }}";
        let template = ChatTemplate::new(source, "<s>", "</s>").unwrap();
        assert_eq!(template.render(&[turn("user", "  hi  ")]).unwrap(), "<s>HI");
        let error = template.render(&[turn("system", "x")]).unwrap_err();
        assert!(error.to_string().contains("first turn must be the user"));
    }

    #[test]
    fn a_runaway_template_runs_out_of_fuel() {
        let source =
            "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}";
        let template = ChatTemplate::new(source, "", "").unwrap();
        assert!(template.render(&[turn("user", "hi")]).is_err());
    }

    #[test]
    fn a_broken_template_is_refused_at_load() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }

    /// Templates written to hurt: huge strings, endless loops, deep recursion, file and
    /// environment access. Each is refused or fails with an error (the fuel ends loops; a hang
    /// would hang this test), and no render's output is large or reads a file.
    #[test]
    fn hostile_templates_fail_cleanly() {
        let turns = [turn("user", "hi")];
        let hostile = [
            "{{ 'x' * 1000000000 }}",
            "{{ messages[0].content * 1000000000 }}",
            "{% for i in range(1000000000) %}x{% endfor %}",
            "{{ range(1000000000) | list | length }}",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "{% include '/etc/passwd' %}",
            "{% import 'os' as os %}{{ os.environ }}",
            "{{ self.__init__.__globals__ }}",
            "{{ lipsum.__globals__['os'].popen('id').read() }}",
            "{% for m in messages %}{% for m2 in messages * 100000 %}{{ m2.content }}{% endfor %}{% endfor %}",
        ];
        for source in hostile {
            let rendered = ChatTemplate::new(source, "<s>", "</s>").and_then(|t| t.render(&turns));
            if let Ok(text) = &rendered {
                assert!(text.len() < 1 << 20, "{source}: {} bytes", text.len());
            }
            assert!(rendered.is_err() || !rendered.as_ref().unwrap().contains("root:"));
        }
    }
}
