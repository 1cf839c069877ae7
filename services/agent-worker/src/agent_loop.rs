//! The tool-calling loop of one task delivery: model -> tool calls (in
//! parallel where the model asks for several) -> results -> model, up to
//! the agent's `maxSteps`.
//!
//! Every completed model call and every tool result is journaled on the
//! task's event subject, acknowledged by JetStream before the loop moves on.
//! A redelivered task replays what its journal holds and continues after
//! it: a tool is never called twice for a (task, step, call id) whose result
//! was stored, and each call carries that triple as its idempotency key for
//! the rare call that ran but whose result was lost with the worker.

use std::time::Instant;

use futures::StreamExt as _;
use mesh_bus::Delivery;
use mesh_proto::{
    ApprovalRequested, ChatMessage, ChatRequest, ModelStep, PendingApproval, TaskCompleted,
    TaskDelta, TaskEnvelope, TokenUsage, ToolCall, ToolCallResult, ToolCallStarted,
    task_event::Kind,
};
use tracing::Instrument as _;

use crate::events::{TaskEvents, now_ms};
use crate::genai;
use crate::journal::Journal;
use crate::memory::MemoryError;
use crate::runner::{RunError, TaskRunner, attempt_of, classify};
use crate::tools::{CallContext, Toolbox};

/// Where a delivery is in the stream of its deltas.
struct Cursor {
    attempt: u32,
    next_delta: u32,
}

impl TaskRunner {
    pub(crate) async fn agent_loop(
        &self,
        delivery: &Delivery<TaskEnvelope>,
        events: &TaskEvents,
        journal: Journal,
    ) -> Result<TaskCompleted, RunError> {
        let task = &delivery.payload;
        let spec = task.spec.clone().unwrap_or_default();
        let toolbox = Toolbox::new(
            &task.tools,
            self.tool_clients.clone(),
            self.config.tools.clone(),
            self.config.secrets_env.clone(),
        )
        .map_err(|e| RunError::Fatal(e.to_string()))?;
        let memory = spec
            .memory
            .clone()
            .filter(|m| m.r#type == "redis" && !task.session_id.is_empty());

        let mut messages = Vec::new();
        if !spec.system_prompt.is_empty() {
            messages.push(ChatMessage {
                role: "system".to_owned(),
                content: spec.system_prompt.clone(),
                ..Default::default()
            });
        }
        if let Some(memory) = &memory {
            let earlier = self
                .memory
                .history(memory, &task.tenant, &task.agent, &task.session_id)
                .await
                .map_err(memory_error)?;
            tracing::debug!(messages = earlier.len(), "session memory loaded");
            messages.extend(earlier);
        }
        messages.push(ChatMessage {
            role: "user".to_owned(),
            content: task.input.clone(),
            ..Default::default()
        });

        let max_steps = if spec.max_steps > 0 {
            spec.max_steps
        } else {
            self.config.tools.default_max_steps
        };
        let mut cursor = Cursor {
            attempt: attempt_of(delivery),
            next_delta: 0,
        };
        let mut total = TokenUsage::default();
        for step in 1..=max_steps {
            let model_step = match journal.model_steps.get(&step) {
                Some(journaled) => journaled.clone(),
                None => {
                    let done = self
                        .model_call(
                            delivery,
                            events,
                            &spec,
                            &messages,
                            &toolbox,
                            step,
                            &mut cursor,
                        )
                        .await?;
                    events
                        .publish(&format!("step:{step}:model"), Kind::ModelStep(done.clone()))
                        .await?;
                    events.flush().await?;
                    done
                }
            };
            let usage = model_step.usage.unwrap_or_default();
            total.input_tokens += usage.input_tokens;
            total.output_tokens += usage.output_tokens;
            messages.push(ChatMessage {
                role: "assistant".to_owned(),
                content: model_step.content.clone(),
                tool_calls: model_step.tool_calls.clone(),
                ..Default::default()
            });
            if model_step.tool_calls.is_empty() {
                if let Some(memory) = &memory {
                    self.memory
                        .append(
                            memory,
                            &task.tenant,
                            &task.agent,
                            &task.session_id,
                            &task.task_id,
                            &task.input,
                            &model_step.content,
                        )
                        .await
                        .map_err(memory_error)?;
                }
                return Ok(TaskCompleted {
                    output: model_step.content,
                    usage: Some(total),
                    finish_reason: model_step.finish_reason,
                    model: model_step.model,
                });
            }
            // Tools run in parallel; `human` calls are then put to a person
            // one at a time (the task pauses at the first undecided one).
            let calls = &model_step.tool_calls;
            let human: Vec<bool> = calls
                .iter()
                .map(|c| toolbox.human_gate(&c.name).is_some())
                .collect();
            let machine_calls: Vec<ToolCall> = calls
                .iter()
                .zip(&human)
                .filter(|(_, human)| !**human)
                .map(|(call, _)| call.clone())
                .collect();
            let machine: Vec<Result<ToolCallResult, RunError>> =
                futures::stream::iter(machine_calls)
                    .map(|call| {
                        self.tool_call(delivery, events, &toolbox, &journal, step, call, &spec)
                    })
                    .buffered(self.config.tools.max_parallel_calls.max(1))
                    .collect()
                    .await;
            events.flush().await?;
            let mut machine = machine.into_iter();
            let mut results = Vec::with_capacity(calls.len());
            for (call, human) in calls.iter().zip(human) {
                if human {
                    let decided = self
                        .human_call(delivery, events, &toolbox, &journal, step, call.clone())
                        .await;
                    events.flush().await?;
                    results.push(decided?);
                } else if let Some(result) = machine.next() {
                    results.push(result?);
                }
            }
            for result in results {
                messages.push(ChatMessage {
                    role: "tool".to_owned(),
                    content: result.output,
                    tool_call_id: result.call_id,
                    name: result.name,
                    ..Default::default()
                });
            }
        }
        Err(RunError::StepLimit(format!(
            "the agent made {max_steps} model calls (its maxSteps) without a final answer"
        )))
    }

    /// One model call, streamed: content deltas go out as task events as
    /// they arrive; tool-call fragments are assembled by index.
    #[allow(clippy::too_many_arguments)]
    async fn model_call(
        &self,
        delivery: &Delivery<TaskEnvelope>,
        events: &TaskEvents,
        spec: &mesh_proto::AgentSpec,
        messages: &[ChatMessage],
        toolbox: &Toolbox,
        step: u32,
        cursor: &mut Cursor,
    ) -> Result<ModelStep, RunError> {
        let task = &delivery.payload;
        let request = ChatRequest {
            model: spec.model.clone(),
            messages: messages.to_vec(),
            temperature: spec.temperature,
            max_tokens: spec.max_tokens,
            request_id: format!("{}:{}:{step}", task.task_id, attempt_of(delivery)),
            tools: toolbox.definitions(),
            session_id: task.session_id.clone(),
            ..Default::default()
        };
        let record_content = spec.record_content;
        let max_chars = self.config.recorded_content_max_chars;
        let span = tracing::info_span!(
            "chat",
            otel.name = format!("chat {}", spec.model),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = %genai::provider_name(&spec.provider),
            gen_ai.request.model = %spec.model,
            gen_ai.request.temperature = tracing::field::Empty,
            gen_ai.request.max_tokens = tracing::field::Empty,
            gen_ai.request.stream = true,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.response.time_to_first_chunk = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            gen_ai.input.messages = tracing::field::Empty,
            gen_ai.output.messages = tracing::field::Empty,
            langfuse.observation.completion_start_time = tracing::field::Empty,
            error.r#type = tracing::field::Empty,
            agentmesh.step = step,
            agentmesh.tenant = %task.tenant,
        );
        if let Some(temperature) = spec.temperature {
            span.record("gen_ai.request.temperature", f64::from(temperature));
        }
        if let Some(max_tokens) = spec.max_tokens {
            span.record("gen_ai.request.max_tokens", max_tokens);
        }
        // Prompts and completions only where the agent's spec allows it.
        if record_content {
            span.record(
                "gen_ai.input.messages",
                genai::input_messages(messages, max_chars).as_str(),
            );
        }
        let started = Instant::now();
        // Errors carry their `error.type` out of the call, to the span.
        let call = async {
            let request = mesh_runtime::grpc::outgoing(&task.tenant, request)
                .map_err(|s| (RunError::Fatal(s.message().to_owned()), "invalid_request"))?;
            let mut stream = self
                .router
                .clone()
                .chat_stream(request)
                .await
                .map_err(|s| (classify(&s), genai::grpc_error_type(s.code())))?
                .into_inner();
            let mut content = String::new();
            let mut calls: Vec<ToolCall> = Vec::new();
            let mut usage = TokenUsage::default();
            let mut finish_reason = String::new();
            let mut model = spec.model.clone();
            let mut first_token = false;
            loop {
                let next =
                    tokio::time::timeout(self.config.inference_idle_timeout, stream.message())
                        .await
                        .map_err(|_| {
                            let error = RunError::Retryable(format!(
                                "no output from the model for {} ms",
                                self.config.inference_idle_timeout.as_millis()
                            ));
                            (error, "timeout")
                        })?;
                let Some(chunk) =
                    next.map_err(|s| (classify(&s), genai::grpc_error_type(s.code())))?
                else {
                    break;
                };
                // Time to first token: from the request to the first
                // content or tool-call delta, as a time on the span.
                if !first_token && (!chunk.delta.is_empty() || !chunk.tool_calls.is_empty()) {
                    first_token = true;
                    let span = tracing::Span::current();
                    span.record(genai::TIME_TO_FIRST_CHUNK, started.elapsed().as_secs_f64());
                    let now =
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                    span.record(genai::COMPLETION_START_TIME, now.as_str());
                }
                if !chunk.delta.is_empty() {
                    events
                        .publish(
                            &format!("delta:{}:{}", cursor.attempt, cursor.next_delta),
                            Kind::Delta(TaskDelta {
                                attempt: cursor.attempt,
                                index: cursor.next_delta,
                                content: chunk.delta.clone(),
                            }),
                        )
                        .await
                        .map_err(|e| (RunError::from(e), "bus"))?;
                    content.push_str(&chunk.delta);
                    cursor.next_delta += 1;
                }
                for piece in chunk.tool_calls {
                    let index = piece.index as usize;
                    if index >= 128 {
                        let error =
                            RunError::Retryable(format!("the model sent tool call index {index}"));
                        return Err((error, "invalid_response"));
                    }
                    if calls.len() <= index {
                        calls.resize_with(index + 1, ToolCall::default);
                    }
                    let call = &mut calls[index];
                    if !piece.id.is_empty() {
                        call.id = piece.id;
                    }
                    if !piece.name.is_empty() {
                        call.name = piece.name;
                    }
                    call.arguments.push_str(&piece.arguments);
                }
                if !chunk.finish_reason.is_empty() {
                    finish_reason = chunk.finish_reason;
                }
                if !chunk.model.is_empty() {
                    model = chunk.model;
                }
                if let Some(u) = chunk.usage {
                    usage = TokenUsage {
                        input_tokens: u.prompt_tokens,
                        output_tokens: u.completion_tokens,
                    };
                }
            }
            calls.retain(|c| !c.name.is_empty());
            normalise_call_ids(&mut calls, step);
            let span = tracing::Span::current();
            span.record("gen_ai.response.model", model.as_str());
            span.record("gen_ai.usage.input_tokens", usage.input_tokens);
            span.record("gen_ai.usage.output_tokens", usage.output_tokens);
            if !finish_reason.is_empty() {
                mesh_telemetry::set_string_array(
                    &span,
                    "gen_ai.response.finish_reasons",
                    vec![finish_reason.clone()],
                );
            }
            if record_content {
                span.record(
                    "gen_ai.output.messages",
                    genai::output_messages(&content, &calls, &finish_reason, max_chars).as_str(),
                );
            }
            Ok(ModelStep {
                attempt: cursor.attempt,
                step,
                content,
                tool_calls: calls,
                usage: Some(usage),
                model,
                finish_reason,
            })
        };
        let outcome = match tokio::time::timeout(
            self.config.inference_timeout,
            call.instrument(span.clone()),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err((
                RunError::Retryable(format!(
                    "model call exceeded {} ms",
                    self.config.inference_timeout.as_millis()
                )),
                "timeout",
            )),
        };
        outcome.map_err(|(error, error_type)| {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_message", error.to_string().as_str());
            span.record("error.type", error_type);
            error
        })
    }

    /// A `human` call: its journaled result, or the decision (journaled, or
    /// carried by this dispatch) as its result, or else an approval request
    /// and the task pauses.
    async fn human_call(
        &self,
        delivery: &Delivery<TaskEnvelope>,
        events: &TaskEvents,
        toolbox: &Toolbox,
        journal: &Journal,
        step: u32,
        call: ToolCall,
    ) -> Result<ToolCallResult, RunError> {
        if let Some(stored) = journal.results.get(&(step, call.id.clone())) {
            return Ok(stored.clone());
        }
        let task = &delivery.payload;
        let decision = journal.approvals.get(&call.id).cloned().or_else(|| {
            task.resolution
                .clone()
                .filter(|decision| decision.call_id == call.id)
        });
        let result = |output: String, is_error: bool| ToolCallResult {
            attempt: attempt_of(delivery),
            step,
            call_id: call.id.clone(),
            name: call.name.clone(),
            output,
            is_error,
            duration_ms: 0,
        };
        let result = match (
            decision,
            toolbox.check_arguments(&call.name, &call.arguments),
        ) {
            (Some(decision), _) => result(
                serde_json::json!({
                    "approved": decision.approved,
                    "comment": decision.comment,
                    "decidedBy": decision.by,
                    "timedOut": decision.timed_out,
                })
                .to_string(),
                false,
            ),
            // Nothing to put to a person: the model is told, as for any tool.
            (None, Err(why)) => result(why, true),
            (None, Ok(())) => {
                let gate = toolbox
                    .human_gate(&call.name)
                    .ok_or_else(|| RunError::Fatal(format!("{} is not a human tool", call.name)))?;
                let timeout_ms = i64::try_from(gate.timeout.as_millis()).unwrap_or(i64::MAX);
                let approval = PendingApproval {
                    call_id: call.id.clone(),
                    tool: call.name.clone(),
                    arguments: call.arguments.clone(),
                    prompt: gate.prompt,
                    expires_at_ms: now_ms().saturating_add(timeout_ms),
                    on_timeout: gate.on_timeout,
                    step,
                };
                events
                    .publish(
                        &format!("step:{step}:approval:{}", call.id),
                        Kind::ApprovalRequested(ApprovalRequested {
                            attempt: attempt_of(delivery),
                            approval: Some(approval),
                        }),
                    )
                    .await?;
                events.flush().await?;
                tracing::info!(call_id = %call.id, tool = %call.name, "awaiting approval");
                return Err(RunError::AwaitingApproval);
            }
        };
        events
            .publish(
                &format!("step:{step}:result:{}", call.id),
                Kind::ToolResult(result.clone()),
            )
            .await?;
        Ok(result)
    }

    /// One tool call, or its journaled result.
    #[allow(clippy::too_many_arguments)]
    async fn tool_call(
        &self,
        delivery: &Delivery<TaskEnvelope>,
        events: &TaskEvents,
        toolbox: &Toolbox,
        journal: &Journal,
        step: u32,
        call: ToolCall,
        spec: &mesh_proto::AgentSpec,
    ) -> Result<ToolCallResult, RunError> {
        if let Some(stored) = journal.results.get(&(step, call.id.clone())) {
            return Ok(stored.clone());
        }
        let task = &delivery.payload;
        let idempotency_key = format!("{}:{step}:{}", task.task_id, call.id);
        events
            .publish(
                &format!("step:{step}:call:{}:{}", call.id, attempt_of(delivery)),
                Kind::ToolCall(ToolCallStarted {
                    attempt: attempt_of(delivery),
                    step,
                    call: Some(call.clone()),
                    idempotency_key: idempotency_key.clone(),
                }),
            )
            .await?;
        let span = tracing::info_span!(
            "execute_tool",
            otel.name = format!("execute_tool {}", call.name),
            otel.kind = "internal",
            otel.status_code = tracing::field::Empty,
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = %call.name,
            gen_ai.tool.call.id = %call.id,
            gen_ai.tool.call.arguments = tracing::field::Empty,
            gen_ai.tool.call.result = tracing::field::Empty,
            error.r#type = tracing::field::Empty,
            agentmesh.step = step,
            agentmesh.tenant = %task.tenant,
        );
        // Arguments and results are content: recorded only where the
        // agent's spec allows prompts and completions to be.
        let max_chars = self.config.recorded_content_max_chars;
        if spec.record_content {
            span.record(
                "gen_ai.tool.call.arguments",
                genai::cut(&call.arguments, max_chars).as_str(),
            );
        }
        let started = Instant::now();
        let output = toolbox
            .call(
                &call.name,
                &call.arguments,
                CallContext {
                    idempotency_key: &idempotency_key,
                    tenant: &task.tenant,
                    task_id: &task.task_id,
                    depth: task.depth,
                },
            )
            .instrument(span.clone())
            .await;
        if spec.record_content {
            span.record(
                "gen_ai.tool.call.result",
                genai::cut(&output.output, max_chars).as_str(),
            );
        }
        if output.is_error {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", "tool_error");
        }
        let result = ToolCallResult {
            attempt: attempt_of(delivery),
            step,
            call_id: call.id.clone(),
            name: call.name,
            output: output.output,
            is_error: output.is_error,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        events
            .publish(
                &format!("step:{step}:result:{}", call.id),
                Kind::ToolResult(result.clone()),
            )
            .await?;
        Ok(result)
    }
}

fn memory_error(error: MemoryError) -> RunError {
    match error {
        MemoryError::NotConfigured => RunError::Fatal(error.to_string()),
        MemoryError::Redis(_) => RunError::Retryable(error.to_string()),
    }
}

/// Longest tool-call id kept as the model sent it.
pub const MAX_CALL_ID_CHARS: usize = 64;

/// Tool-call ids are the journal's keys, part of event dedupe ids and the
/// `Idempotency-Key` a tool receives, so they must be unique within the
/// step, short and plain. A model's id is kept when it is 1 to
/// [`MAX_CALL_ID_CHARS`] characters of `[A-Za-z0-9_.:-]` and the first of
/// its step with that id; any other call (no id, a repeated one, a long or
/// odd one) gets `call_<step>_<index>`, unique among the step's ids. The
/// result depends only on the calls, so a redelivered step that replays
/// the journaled response gets the same ids.
pub fn normalise_call_ids(calls: &mut [ToolCall], step: u32) {
    use std::collections::HashSet;
    fn plain(id: &str) -> bool {
        (1..=MAX_CALL_ID_CHARS).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    }
    let mut kept: HashSet<String> = HashSet::new();
    let mut replace = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        if !(plain(&call.id) && kept.insert(call.id.clone())) {
            replace.push(i);
        }
    }
    for i in replace {
        let mut id = format!("call_{step}_{i}");
        let mut n = 1;
        while kept.contains(&id) {
            id = format!("call_{step}_{i}_{n}");
            n += 1;
        }
        kept.insert(id.clone());
        calls[i].id = id;
    }
}

#[cfg(test)]
mod call_id_tests {
    use super::*;

    fn calls(ids: &[&str]) -> Vec<ToolCall> {
        ids.iter()
            .map(|id| ToolCall {
                id: (*id).to_owned(),
                name: "lookup".to_owned(),
                arguments: "{}".to_owned(),
            })
            .collect()
    }

    fn ids(calls: &[ToolCall]) -> Vec<&str> {
        calls.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn plain_unique_ids_are_kept() {
        let mut c = calls(&["call_abc123", "toolu_01XyZ", "fc-1.2:3"]);
        normalise_call_ids(&mut c, 4);
        assert_eq!(ids(&c), ["call_abc123", "toolu_01XyZ", "fc-1.2:3"]);
    }

    #[test]
    fn missing_repeated_long_and_odd_ids_are_replaced_uniquely() {
        let long = "x".repeat(MAX_CALL_ID_CHARS + 1);
        let mut c = calls(&["", "same", "same", &long, "bad id\n", "call_2_5"]);
        normalise_call_ids(&mut c, 2);
        assert_eq!(
            ids(&c),
            [
                "call_2_0", "same", "call_2_2", "call_2_3", "call_2_4", "call_2_5"
            ]
        );
        // A generated id that a model's id already holds moves aside.
        let mut c = calls(&["call_3_1", ""]);
        normalise_call_ids(&mut c, 3);
        assert_eq!(ids(&c), ["call_3_1", "call_3_1_1"]);
    }

    #[test]
    fn the_same_calls_get_the_same_ids() {
        let mut a = calls(&["", "dup", "dup", "ok"]);
        let mut b = a.clone();
        normalise_call_ids(&mut a, 7);
        normalise_call_ids(&mut b, 7);
        assert_eq!(a, b);
        let unique: std::collections::HashSet<_> = ids(&a).into_iter().collect();
        assert_eq!(unique.len(), 4);
    }
}
