//! Phi-2's own chat format (its model card's QA format):
//! the system text first, then `Instruct: <user>\nOutput: <assistant>` turns,
//! ending with `Output:` for the model to continue.

use super::{Message, Role};

/// What ends an answer in Phi-2's format: the model otherwise goes on to write the
/// next turn itself.
pub const STOPS: [&str; 3] = ["\nInstruct:", "\nUser:", "\nSystem:"];

/// The prompt of `messages` in Phi-2's format.
pub fn prompt(messages: &[Message]) -> String {
    let mut out = String::new();
    for m in messages.iter().filter(|m| m.role == Role::System) {
        out.push_str(m.content.trim());
        out.push('\n');
    }
    let mut open = false;
    for m in messages.iter().filter(|m| m.role != Role::System) {
        match m.role {
            Role::User => {
                if open {
                    out.push_str("Output:\n");
                }
                out.push_str("Instruct: ");
                out.push_str(m.content.trim());
                out.push('\n');
                open = true;
            }
            Role::Assistant => {
                out.push_str("Output: ");
                out.push_str(m.content.trim());
                out.push('\n');
                open = false;
            }
            Role::System => unreachable!("filtered out above"),
        }
    }
    out.push_str("Output:");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: Role, content: &str) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn phi2_format_puts_the_system_text_first_and_ends_with_output() {
        let msgs = [
            m(Role::User, "What is 2+2?"),
            m(Role::System, "Answer briefly."),
            m(Role::Assistant, "4"),
            m(Role::User, " And 3+3? "),
        ];
        assert_eq!(
            prompt(&msgs),
            "Answer briefly.\nInstruct: What is 2+2?\nOutput: 4\nInstruct: And 3+3?\nOutput:"
        );
        assert_eq!(prompt(&[m(Role::User, "Hi")]), "Instruct: Hi\nOutput:");
    }
}
