//! Chat templates: the Jinja template from the GGUF metadata, rendered with minijinja the way
//! Hugging Face `transformers` renders it (`trim_blocks`, `lstrip_blocks`, `raise_exception`).

use cloister_types::openai::ChatMessage;
use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, ErrorKind, State};
use serde::Serialize;

use crate::{Error, Result};

const TEMPLATE_NAME: &str = "chat";

/// ChatML, used only when the GGUF carries no template.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + \
    message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}\
    {{ '<|im_start|>assistant\n' }}{% endif %}";

/// A compiled chat template plus the special-token texts it may refer to.
pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    from_model: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("from_model", &self.from_model)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'a str,
    content: String,
}

#[derive(Serialize)]
struct TemplateContext<'a> {
    messages: Vec<TemplateMessage<'a>>,
    add_generation_prompt: bool,
    bos_token: &'a str,
    eos_token: &'a str,
}

impl ChatTemplate {
    /// Compiles `source` (the model's `tokenizer.chat_template`), or ChatML when there is none.
    pub(crate) fn new(source: Option<String>, bos_token: String, eos_token: String) -> Result<Self> {
        let from_model = source.is_some();
        let source = source.unwrap_or_else(|| CHATML.to_owned());
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.set_unknown_method_callback(python_methods);
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(|e| Error::Load(format!("the model's chat template does not compile: {e}")))?;
        Ok(Self {
            env,
            bos_token,
            eos_token,
            from_model,
        })
    }

    /// Whether the template came from the model (false: the ChatML fallback).
    pub(crate) fn is_from_model(&self) -> bool {
        self.from_model
    }

    /// Renders the conversation, ending with the assistant's turn opened.
    pub(crate) fn render(&self, messages: &[ChatMessage]) -> Result<String> {
        let ctx = TemplateContext {
            messages: messages
                .iter()
                .map(|m| TemplateMessage {
                    role: m.role.as_str(),
                    content: m.text_content(),
                })
                .collect(),
            add_generation_prompt: true,
            bos_token: &self.bos_token,
            eos_token: &self.eos_token,
        };
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::Inference(format!("chat template missing: {e}")))?;
        template.render(ctx).map_err(|e| match e.kind() {
            // The template refused the conversation (for example roles that do not alternate).
            ErrorKind::InvalidOperation => Error::InvalidRequest(format!("chat template: {e}")),
            _ => Error::InvalidRequest(format!("the conversation does not fit the chat template: {e}")),
        })
    }
}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// Llama-3-style templates print today's date (`strftime_now("%d %b %Y")`). Supports `%Y %m %d %b %B`
/// (UTC); other directives are copied as written.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let name = MONTHS
        .get(month.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("January");
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('b') => out.push_str(name.get(..3).unwrap_or(name)),
            Some('B') => out.push_str(name),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The Python string and dict methods that Hugging Face templates commonly call.
fn python_methods(
    state: &State<'_, '_>,
    value: &Value,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, minijinja::Error> {
    let arg_str = |i: usize| args.get(i).and_then(|v| v.as_str().map(str::to_owned));
    match (value.kind(), method) {
        (ValueKind::String, _) => {
            let s = value.as_str().unwrap_or_default();
            let chars = arg_str(0);
            let is_strip = |c: char| chars.as_deref().map_or(c.is_whitespace(), |set| set.contains(c));
            let out = match method {
                "strip" => Value::from(s.trim_matches(is_strip)),
                "lstrip" => Value::from(s.trim_start_matches(is_strip)),
                "rstrip" => Value::from(s.trim_end_matches(is_strip)),
                "upper" => Value::from(s.to_uppercase()),
                "lower" => Value::from(s.to_lowercase()),
                "startswith" => Value::from(s.starts_with(chars.as_deref().unwrap_or_default())),
                "endswith" => Value::from(s.ends_with(chars.as_deref().unwrap_or_default())),
                "replace" => {
                    let (Some(from), Some(to)) = (arg_str(0), arg_str(1)) else {
                        return Err(minijinja::Error::from(ErrorKind::MissingArgument));
                    };
                    Value::from(s.replace(&from, &to))
                }
                "split" => match chars.as_deref() {
                    Some(sep) if !sep.is_empty() => {
                        Value::from(s.split(sep).map(str::to_owned).collect::<Vec<_>>())
                    }
                    _ => Value::from(s.split_whitespace().map(str::to_owned).collect::<Vec<_>>()),
                },
                "title" | "capitalize" => {
                    let mut c = s.chars();
                    match c.next() {
                        Some(first) => Value::from(first.to_uppercase().chain(c).collect::<String>()),
                        None => Value::from(""),
                    }
                }
                _ => return Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
            };
            Ok(out)
        }
        (ValueKind::Map, "items") => state.apply_filter("items", std::slice::from_ref(value)),
        (ValueKind::Map, "keys") => Ok(Value::from(value.try_iter()?.collect::<Vec<_>>())),
        (ValueKind::Map, "values") => {
            let mut out = Vec::new();
            for key in value.try_iter()? {
                out.push(value.get_item(&key)?);
            }
            Ok(Value::from(out))
        }
        (ValueKind::Map, "get") => {
            let key = args.first().cloned().unwrap_or_default();
            let found = value.get_item(&key)?;
            Ok(if found.is_undefined() {
                args.get(1).cloned().unwrap_or_default()
            } else {
                found
            })
        }
        _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn tpl(src: Option<&str>) -> ChatTemplate {
        ChatTemplate::new(src.map(str::to_owned), "<s>".into(), "</s>".into())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn smollm2_template_injects_default_system_prompt() {
        let out = tpl(Some(SMOLLM2))
            .render(&[ChatMessage::text("user", "Hi")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn chatml_fallback() {
        let t = tpl(None);
        assert!(!t.is_from_model());
        let out = t
            .render(&[ChatMessage::text("system", "S"), ChatMessage::text("user", "U")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_is_an_invalid_request_and_methods_work() {
        let t = tpl(Some(
            "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('roles must alternate') }}{% endif %}\
             {{ bos_token }}{{ messages[0]['content'].strip().upper() }}|{{ messages[0].get('role') }}",
        ));
        let err = t.render(&[ChatMessage::text("assistant", "x")]);
        assert!(matches!(err, Err(Error::InvalidRequest(m)) if m.contains("roles must alternate")));
        let ok = t
            .render(&[ChatMessage::text("user", "  hi ")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok, "<s>HI|user");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert!(strftime_now("%d %b %Y".into()).len() >= 11);
    }

    #[test]
    fn broken_template_is_a_load_error() {
        let r = ChatTemplate::new(Some("{% for %}".into()), String::new(), String::new());
        assert!(matches!(r, Err(Error::Load(_))));
    }
}
