//! The pgwire handlers of one client connection.
//!
//! Streaming is the point: rows are written and flushed batch by batch as the engine produces
//! them (pgwire itself would buffer until Sync), in the simple protocol, the extended protocol
//! and `COPY ... TO STDOUT`. A CancelRequest (psql's Ctrl-C) or a client that goes away drops
//! the running query, which stops its dataflow and frees its state.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ScalarValue;
use eddy_engine::error::EngineError;
use eddy_engine::panics;
use eddy_engine::session::{QueryOutput, Session, StatementResult, TransactionState};
use eddy_engine::sql::parser::{EddyStatement, ParsedStatement, parse_sql};
use futures::{Sink, SinkExt};
use pgwire::api::auth::StartupHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldFormat, FieldInfo, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, DEFAULT_NAME, PgWireConnectionState, Type,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail, CopyInResponse, CopyOutResponse};
use pgwire::messages::data::{NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{Describe, Execute, Parse, ParseComplete, PortalSuspended};
use pgwire::messages::response::{EmptyQueryResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::simplequery::Query;
use tokio::sync::Mutex;

use super::encode::{CopyWriter, TextZone, data_rows, field_descriptions, field_infos};
use super::encoder_guard::EncoderGuard;
use super::errors::{error_info, notice, protocol_error, user_error, warning};
use super::params;
use super::startup::{ConnectionSlot, Started, StartupGate};

/// A statement prepared by the extended protocol.
pub type PreparedStatement = Arc<ParsedStatement>;

/// A `COPY ... FROM STDIN` collecting its data.
struct PendingCopy {
    target: eddy_engine::session::CopyIn,
    data: Vec<u8>,
}

/// One statement to run, with what the protocol says about it.
struct Run<'a> {
    statement: &'a ParsedStatement,
    /// Bound `$n` parameters (extended protocol).
    params: &'a [ScalarValue],
    /// Result column formats the client asked for.
    formats: &'a Format,
    /// Send a RowDescription before the rows (simple protocol; the extended protocol
    /// describes through Describe).
    describe_rows: bool,
}

/// What a statement left the connection doing.
enum Flow {
    Done,
    /// COPY FROM STDIN started: the client sends data next.
    CopyIn,
}

/// Why a statement stopped.
enum StatementError {
    /// A user-visible error; the connection carries on.
    Engine(EngineError),
    /// The connection itself failed (the client went away).
    Wire(PgWireError),
}

impl From<PgWireError> for StatementError {
    fn from(e: PgWireError) -> Self {
        StatementError::Wire(e)
    }
}

/// Turns a failed write to the client into a [`StatementError::Wire`].
trait WireResult<T> {
    fn wire(self) -> Result<T, StatementError>;
}

impl<T, E> WireResult<T> for Result<T, E>
where
    PgWireError: From<E>,
{
    fn wire(self) -> Result<T, StatementError> {
        self.map_err(|e| StatementError::Wire(PgWireError::from(e)))
    }
}

/// How often a query that produces nothing checks that its client is still there.
const CLIENT_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// A second handle on a client's socket, used only to notice that the client went away while
/// its query produces nothing (pgwire owns the socket and reads it only between statements).
pub struct ClientProbe(std::net::TcpStream);

impl ClientProbe {
    pub fn new(socket: std::net::TcpStream) -> Self {
        Self(socket)
    }

    /// True once the client closed or reset the connection, or sent Terminate. Peeking
    /// consumes nothing: bytes a client already sent (a pipelined next statement) stay for
    /// pgwire to read.
    fn client_gone(&self) -> bool {
        let mut head = [0u8; 5];
        match self.0.peek(&mut head) {
            Ok(0) => true,
            Ok(n) => n == head.len() && head == [b'X', 0, 0, 0, 4],
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ),
        }
    }
}

/// The next batch of `output`. While none comes, checks that the client is still connected, so
/// that the query of a client that went away stops even if it never produces another row.
async fn next_batch_or_probe<C>(
    client: &mut C,
    probe: Option<&ClientProbe>,
    output: &mut QueryOutput,
) -> Result<Option<datafusion::arrow::record_batch::RecordBatch>, StatementError>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    loop {
        match tokio::time::timeout(CLIENT_CHECK, output.next_batch()).await {
            Ok(result) => return result.map_err(StatementError::Engine),
            Err(_) => {
                if probe.is_some_and(ClientProbe::client_gone) {
                    return Err(StatementError::Wire(PgWireError::IoError(
                        std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "client disconnected during a query",
                        ),
                    )));
                }
                // A write fails once the peer has reset the connection, which also catches a
                // client that closed with unread bytes still queued. ParameterStatus may come
                // at any time, also amid COPY data; clients record it and move on.
                client
                    .send(PgWireBackendMessage::ParameterStatus(
                        pgwire::messages::startup::ParameterStatus::new(
                            "eddy_query_running".to_string(),
                            "on".to_string(),
                        ),
                    ))
                    .await
                    .wire()?;
            }
        }
    }
}

/// One client connection: its session and protocol state.
pub struct Connection {
    session: Mutex<Session>,
    startup: Arc<StartupGate>,
    /// Its place among the `--max-connections`.
    slot: Arc<ConnectionSlot>,
    parser: Arc<StatementParser>,
    copy: std::sync::Mutex<Option<PendingCopy>>,
    peer: String,
    probe: Option<ClientProbe>,
    /// Encodes result batches, catching a panic in the encoder.
    encoder: EncoderGuard,
    /// Names of the statements prepared with Parse, for `DEALLOCATE ALL` (pgwire's store
    /// cannot list them).
    prepared: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Connection {
    pub fn new(
        session: Session,
        startup: Arc<StartupGate>,
        slot: Arc<ConnectionSlot>,
        peer: String,
        probe: Option<ClientProbe>,
    ) -> Self {
        let encoder = EncoderGuard::new(session.engine().config().test_faults);
        Self {
            encoder,
            session: Mutex::new(session),
            startup,
            slot,
            parser: Arc::new(StatementParser),
            copy: std::sync::Mutex::new(None),
            peer,
            probe,
            prepared: std::sync::Mutex::default(),
        }
    }
}

fn transaction_status(state: TransactionState) -> TransactionStatus {
    match state {
        TransactionState::Idle => TransactionStatus::Idle,
        TransactionState::InBlock => TransactionStatus::Transaction,
        TransactionState::Failed => TransactionStatus::Error,
    }
}

#[async_trait]
impl StartupHandler for Connection {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let started = self
            .startup
            .on_startup(client, message, &self.slot)
            .await
            .inspect_err(|e| tracing::info!(peer = %self.peer, error = %e, "connection refused"))?;
        if started == Started::NotYet {
            return Ok(());
        }
        let meta = client.metadata();
        let user = meta
            .get(pgwire::api::METADATA_USER)
            .cloned()
            .unwrap_or_default();
        let database = meta
            .get(pgwire::api::METADATA_DATABASE)
            .cloned()
            .unwrap_or_default();
        let application = meta
            .get(pgwire::api::METADATA_APPLICATION_NAME)
            .cloned()
            .unwrap_or_default();
        tracing::info!(
            peer = %self.peer,
            %user,
            %database,
            %application,
            tls = client.is_secure(),
            "connection started"
        );
        if !application.is_empty() {
            self.session
                .lock()
                .await
                .set_variable("application_name", application);
        }
        Ok(())
    }
}

impl Connection {
    /// Executes one statement and writes its whole response (but not ReadyForQuery).
    async fn run_statement<C>(
        &self,
        client: &mut C,
        session: &mut Session,
        run: &Run<'_>,
    ) -> Result<Flow, StatementError>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let result = match self.deallocate(client, run.statement) {
            Some(result) => result,
            None => session.execute(run.statement, run.params).await,
        }
        .map_err(StatementError::Engine)?;
        match result {
            StatementResult::Rows(output) => {
                self.send_rows(
                    client,
                    output,
                    run.formats,
                    run.describe_rows,
                    &session_zone(session),
                )
                .await?;
            }
            StatementResult::CopyOut(output, format) => {
                self.send_copy_out(client, output, &format, &session_zone(session))
                    .await?;
            }
            StatementResult::CopyIn(target) => {
                let columns = target.num_columns();
                let format = target.format.clone();
                *self.copy.lock().unwrap_or_else(|e| e.into_inner()) = Some(PendingCopy {
                    target,
                    data: Vec::new(),
                });
                let code = i8::from(format == eddy_engine::session::CopyFormat::Binary);
                client
                    .send(PgWireBackendMessage::CopyInResponse(CopyInResponse::new(
                        code,
                        columns as i16,
                        vec![i16::from(code); columns],
                    )))
                    .await
                    .wire()?;
                return Ok(Flow::CopyIn);
            }
            StatementResult::Command(tag) => {
                client
                    .feed(PgWireBackendMessage::CommandComplete(
                        command_tag(&tag).into(),
                    ))
                    .await
                    .wire()?;
            }
            StatementResult::Notice { message, then } => {
                client
                    .feed(PgWireBackendMessage::NoticeResponse(notice(message).into()))
                    .await
                    .wire()?;
                client
                    .feed(PgWireBackendMessage::CommandComplete(
                        command_tag(&then).into(),
                    ))
                    .await
                    .wire()?;
            }
        }
        Ok(Flow::Done)
    }

    async fn send_rows<C>(
        &self,
        client: &mut C,
        mut output: QueryOutput,
        formats: &Format,
        describe_rows: bool,
        zone: &TextZone,
    ) -> Result<(), StatementError>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let formats = column_formats(formats, output.schema.fields().len());
        if describe_rows {
            client
                .send(PgWireBackendMessage::RowDescription(RowDescription::new(
                    field_descriptions(&output.schema, &formats),
                )))
                .await
                .wire()?;
        }
        let mut n = 0;
        while let Some(batch) =
            next_batch_or_probe(client, self.probe.as_ref(), &mut output).await?
        {
            let rows = self
                .encoder
                .encode(&batch, || data_rows(&batch, &formats, zone))
                .map_err(StatementError::Engine)?;
            n += rows.len();
            for row in rows {
                client
                    .feed(PgWireBackendMessage::DataRow(row))
                    .await
                    .wire()?;
            }
            client.flush().await.wire()?;
        }
        for w in output.warnings() {
            client
                .feed(PgWireBackendMessage::NoticeResponse(warning(w).into()))
                .await
                .wire()?;
        }
        let tag = match output.tag {
            "SELECT" | "FETCH" => Tag::new(output.tag).with_rows(n),
            other => Tag::new(other),
        };
        client
            .feed(PgWireBackendMessage::CommandComplete(tag.into()))
            .await
            .wire()?;
        Ok(())
    }

    async fn send_copy_out<C>(
        &self,
        client: &mut C,
        mut output: QueryOutput,
        format: &eddy_engine::session::CopyFormat,
        zone: &TextZone,
    ) -> Result<(), StatementError>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let writer = CopyWriter::from_format(format);
        let columns = output.schema.fields().len();
        let code = i16::from(writer.format_code());
        client
            .send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
                writer.format_code(),
                columns as i16,
                vec![code; columns],
            )))
            .await
            .wire()?;
        let csv_header = matches!(
            format,
            eddy_engine::session::CopyFormat::Csv { header: true, .. }
        );
        // The header travels with the first row (or the trailer), as Postgres sends it.
        let mut header = writer.header(&output.schema, csv_header);
        let mut n = 0;
        while let Some(batch) =
            next_batch_or_probe(client, self.probe.as_ref(), &mut output).await?
        {
            let rows = self
                .encoder
                .encode(&batch, || writer.encode_batch(&batch, zone))
                .map_err(StatementError::Engine)?;
            n += rows.len();
            for row in rows {
                let data = match header.take() {
                    Some(mut h) => {
                        h.extend_from_slice(&row);
                        h
                    }
                    None => row,
                };
                client
                    .feed(PgWireBackendMessage::CopyData(CopyData::new(data.freeze())))
                    .await
                    .wire()?;
            }
            client.flush().await.wire()?;
        }
        let trailer = match (header.take(), writer.trailer()) {
            (Some(mut h), Some(t)) => {
                h.extend_from_slice(&t);
                Some(h)
            }
            (Some(h), None) => Some(h),
            (None, t) => t,
        };
        if let Some(trailer) = trailer {
            client
                .feed(PgWireBackendMessage::CopyData(CopyData::new(
                    trailer.freeze(),
                )))
                .await
                .wire()?;
        }
        client
            .feed(PgWireBackendMessage::CopyDone(CopyDone::new()))
            .await
            .wire()?;
        for w in output.warnings() {
            client
                .feed(PgWireBackendMessage::NoticeResponse(warning(w).into()))
                .await
                .wire()?;
        }
        client
            .feed(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(n).into(),
            ))
            .await
            .wire()?;
        Ok(())
    }

    /// Runs a statement unless the client cancels it first.
    async fn run_cancellable<C>(
        &self,
        client: &mut C,
        session: &mut Session,
        run: Run<'_>,
    ) -> Result<Flow, StatementError>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        tracing::info!(peer = %self.peer, statement = %run.statement.sql, "query");
        let handle = client.session_extensions().get::<Arc<ConnectionHandle>>();
        let cancel = async move {
            match handle {
                Some(handle) => {
                    let rx = handle.start_query().await;
                    if rx.await.is_ok() {
                        return;
                    }
                    std::future::pending::<()>().await
                }
                None => std::future::pending::<()>().await,
            }
        };
        // A panic while the statement runs (planning, a batch query DataFusion runs here,
        // encoding) fails the statement; the session carries on.
        let execution = panics::catch_future(
            "the statement's execution",
            self.run_statement(client, session, &run),
        );
        tokio::select! {
            result = execution => result.unwrap_or_else(|panic| Err(StatementError::Engine(panic))),
            _ = cancel => {
                tracing::info!(peer = %self.peer, "query canceled by the client");
                Err(StatementError::Engine(EngineError::Canceled))
            }
        }
    }
}

/// The session's `TimeZone`, in which `timestamptz` values are sent as text.
fn session_zone(session: &Session) -> TextZone {
    TextZone::named(session.vars().get("timezone").unwrap_or("UTC"))
}

fn column_formats(format: &Format, n: usize) -> Vec<FieldFormat> {
    (0..n)
        .map(|i| match format {
            Format::Individual(v) if v.len() == 1 => FieldFormat::from(v[0]),
            Format::Individual(v) if i >= v.len() => FieldFormat::Text,
            other => other.format_for(i),
        })
        .collect()
}

impl Connection {
    /// `DEALLOCATE [PREPARE] name | ALL`: prepared statements live in the protocol layer, so
    /// it is answered here (psycopg sends `DEALLOCATE ALL` after every DROP once it has
    /// prepared statements). `None` for any other statement.
    fn deallocate<C>(
        &self,
        client: &C,
        statement: &ParsedStatement,
    ) -> Option<Result<StatementResult, EngineError>>
    where
        C: ClientPortalStore,
        C::PortalStore: PortalStore,
    {
        let EddyStatement::Sql(sql) = &statement.statement else {
            return None;
        };
        let datafusion::sql::sqlparser::ast::Statement::Deallocate { name, .. } = sql.as_ref()
        else {
            return None;
        };
        let store = client.portal_store();
        let mut prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") {
            for name in std::mem::take(&mut *prepared) {
                store.rm_statement(&name);
            }
            return Some(Ok(StatementResult::Command(
                eddy_engine::session::CommandTag::new("DEALLOCATE ALL"),
            )));
        }
        if name.value == DEFAULT_NAME || store.get_statement(&name.value).is_none() {
            return Some(Err(EngineError::UnknownPreparedStatement(
                name.value.clone(),
            )));
        }
        store.rm_statement(&name.value);
        prepared.remove(&name.value);
        Some(Ok(StatementResult::Command(
            eddy_engine::session::CommandTag::new("DEALLOCATE"),
        )))
    }
}

fn command_tag(tag: &eddy_engine::session::CommandTag) -> Tag {
    let mut t = Tag::new(&tag.command);
    if let Some(oid) = tag.oid {
        t = t.with_oid(oid);
    }
    if let Some(rows) = tag.rows {
        t = t.with_rows(rows);
    }
    t
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let mut session = self.session.lock().await;
        let mut copy_started = false;
        match parse_sql(&query.query) {
            Err(e) => {
                session.on_error();
                client
                    .feed(PgWireBackendMessage::ErrorResponse(
                        error_info(&e, 0).into(),
                    ))
                    .await?;
            }
            Ok(statements) if statements.is_empty() => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
            }
            Ok(statements) => {
                let last = statements.len() - 1;
                for (i, statement) in statements.iter().enumerate() {
                    let result = self
                        .run_cancellable(
                            client,
                            &mut session,
                            Run {
                                statement,
                                params: &[],
                                formats: &Format::UnifiedText,
                                describe_rows: true,
                            },
                        )
                        .await;
                    match result {
                        Ok(Flow::Done) => {}
                        Ok(Flow::CopyIn) if i == last => {
                            copy_started = true;
                        }
                        Ok(Flow::CopyIn) => {
                            // The data would be ambiguous with the statements that follow.
                            self.copy.lock().unwrap_or_else(|e| e.into_inner()).take();
                            return Err(protocol_error(
                                "0A000",
                                "feature not supported: COPY FROM STDIN followed by more statements in one query string",
                            ));
                        }
                        Err(StatementError::Engine(e)) => {
                            session.on_error();
                            tracing::info!(peer = %self.peer, error = %e, "statement failed");
                            client
                                .feed(PgWireBackendMessage::ErrorResponse(
                                    error_info(&e, 0).into(),
                                ))
                                .await?;
                            break;
                        }
                        Err(StatementError::Wire(e)) => return Err(e),
                    }
                }
            }
        }
        let status = transaction_status(session.transaction_state());
        client.set_transaction_status(status);
        if copy_started {
            client.set_state(PgWireConnectionState::CopyInProgress(false));
            client.flush().await?;
        } else {
            client.set_state(PgWireConnectionState::ReadyForQuery);
            client
                .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                    status,
                )))
                .await?;
        }
        Ok(())
    }

    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `on_query` handles every simple query itself, streaming as it goes.
        Err(protocol_error(
            "XX000",
            "internal error: unexpected do_query",
        ))
    }
}

/// Parses the SQL of a Parse message.
#[derive(Debug, Default)]
pub struct StatementParser;

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = PreparedStatement;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = parse_sql(sql).map_err(|e| user_error(&e, 0))?;
        match statements.len() {
            0 => Ok(None),
            1 => Ok(statements.pop().map(Arc::new)),
            _ => Err(protocol_error(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            )),
        }
    }

    fn get_parameter_types(&self, _stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        // Describe is answered by `Connection::describe`, which plans the statement.
        Ok(Vec::new())
    }

    fn get_result_schema(
        &self,
        _stmt: &Self::Statement,
        _column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(Vec::new())
    }
}

impl Connection {
    /// Parameter types (client-declared first, then inferred) and result fields of a statement.
    async fn describe(
        &self,
        stored: &StoredStatement<PreparedStatement>,
        formats: Option<&Format>,
    ) -> PgWireResult<(
        Vec<Type>,
        Vec<datafusion::arrow::datatypes::DataType>,
        Option<Vec<pgwire::messages::data::FieldDescription>>,
    )> {
        let mut session = self.session.lock().await;
        let (inferred, schema) = session
            .describe(&stored.statement)
            .await
            .map_err(|e| user_error(&e, 0))?;
        let n = inferred.len().max(stored.parameter_types.len());
        let mut types = Vec::with_capacity(n);
        let mut wanted = Vec::with_capacity(n);
        for i in 0..n {
            let inferred = inferred.get(i).cloned().flatten();
            let declared = stored
                .parameter_types
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN);
            let ty = declared.unwrap_or_else(|| params::announced_type(inferred.as_ref()));
            wanted.push(
                inferred
                    .or_else(|| params::declared_arrow_type(&ty))
                    .unwrap_or(datafusion::arrow::datatypes::DataType::Utf8),
            );
            types.push(ty);
        }
        let fields = schema.map(|s| {
            let formats = column_formats(formats.unwrap_or(&Format::UnifiedText), s.fields().len());
            field_descriptions(&s, &formats)
        });
        Ok((types, wanted, fields))
    }
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = PreparedStatement;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    /// pgwire's Parse, remembering the statement's name for `DEALLOCATE ALL`.
    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_NAME.to_owned());
        match StoredStatement::parse(client, &message, self.query_parser()).await? {
            Some(stmt) => client.portal_store().put_statement(Arc::new(stmt)),
            None => client.portal_store().put_empty_statement(&name),
        }
        if name != DEFAULT_NAME {
            self.prepared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name);
        }
        client
            .send(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use pgwire::messages::extendedquery::{
            TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
        };
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let (parameters, fields) = match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => match client.portal_store().get_statement(name) {
                Some(Entry::Value(stmt)) => {
                    let (types, _, fields) = self.describe(&stmt, None).await?;
                    (Some(types), fields)
                }
                Some(Entry::Empty) => (Some(Vec::new()), None),
                None => return Err(PgWireError::StatementNotFound(name.to_owned())),
            },
            TARGET_TYPE_BYTE_PORTAL => match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) => {
                    let (_, _, fields) = self
                        .describe(&portal.statement, Some(&portal.result_column_format))
                        .await?;
                    (None, fields)
                }
                Some(Entry::Empty) => (None, None),
                // A cursor made by DECLARE is a portal too (psycopg's named cursors).
                None => match self.session.lock().await.cursor_schema(name) {
                    Some(schema) => {
                        let formats = column_formats(&Format::UnifiedText, schema.fields().len());
                        (None, Some(field_descriptions(&schema, &formats)))
                    }
                    None => return Err(PgWireError::PortalNotFound(name.to_owned())),
                },
            },
            other => return Err(PgWireError::InvalidTargetType(other)),
        };
        if let Some(parameters) = parameters {
            client
                .send(PgWireBackendMessage::ParameterDescription(
                    ParameterDescription::new(parameters.iter().map(|t| t.oid()).collect()),
                ))
                .await?;
        }
        match fields {
            Some(fields) => {
                client
                    .send(PgWireBackendMessage::RowDescription(RowDescription::new(
                        fields,
                    )))
                    .await?;
            }
            None => {
                client
                    .send(PgWireBackendMessage::NoData(NoData::new()))
                    .await?
            }
        }
        Ok(())
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let portal_name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(portal_name) {
            Some(Entry::Value(portal)) => portal,
            Some(Entry::Empty) => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
                return Ok(());
            }
            None => {
                return self
                    .execute_cursor(
                        client,
                        portal_name,
                        usize::try_from(message.max_rows).unwrap_or(0),
                    )
                    .await;
            }
        };
        let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
        let started = !matches!(
            &*portal.state().lock().await,
            pgwire::api::portal::PortalExecutionState::Initial
        );
        if started {
            return self.fetch_suspended(client, &portal, max_rows).await;
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let (types, wanted, _) = self.describe(&portal.statement, None).await?;
        let params = (0..portal.parameter_len())
            .map(|i| {
                let declared = types.get(i).cloned().unwrap_or(Type::TEXT);
                params::decode(&portal, i, &declared, wanted.get(i))
            })
            .collect::<PgWireResult<Vec<_>>>();
        let params = match params {
            Ok(p) => p,
            Err(e) => {
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Err(e);
            }
        };
        let mut session = self.session.lock().await;
        let statement = Arc::clone(&portal.statement.statement);
        let result = if max_rows > 0 && is_query(&statement) {
            // A row limit per Execute: keep the query in the portal between Executes.
            self.start_suspended(client, &mut session, &statement, &params, &portal)
                .await
        } else {
            self.run_cancellable(
                client,
                &mut session,
                Run {
                    statement: &statement,
                    params: &params,
                    formats: &portal.result_column_format,
                    describe_rows: false,
                },
            )
            .await
        };
        let status = transaction_status(session.transaction_state());
        match result {
            Ok(Flow::Done) => {
                client.set_transaction_status(status);
                client.set_state(PgWireConnectionState::ReadyForQuery);
                drop(session);
                if max_rows > 0 && is_query(&statement) {
                    return self.fetch_suspended(client, &portal, max_rows).await;
                }
                Ok(())
            }
            Ok(Flow::CopyIn) => {
                client.set_transaction_status(status);
                client.set_state(PgWireConnectionState::CopyInProgress(true));
                Ok(())
            }
            Err(StatementError::Engine(e)) => {
                session.on_error();
                client.set_state(PgWireConnectionState::ReadyForQuery);
                Err(user_error(&e, 0))
            }
            Err(StatementError::Wire(e)) => Err(e),
        }
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        _portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `on_execute` handles every Execute itself, streaming as it goes.
        Err(protocol_error(
            "XX000",
            "internal error: unexpected do_query",
        ))
    }
}

/// Ends an Execute: PortalSuspended when the row limit cut the portal short, else
/// CommandComplete with the rows sent.
async fn end_of_execute<C>(
    client: &mut C,
    suspended: bool,
    tag: &str,
    rows: usize,
) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let message = if suspended {
        PgWireBackendMessage::PortalSuspended(PortalSuspended::new())
    } else {
        PgWireBackendMessage::CommandComplete(Tag::new(tag).with_rows(rows).into())
    };
    client.send(message).await?;
    Ok(())
}

fn is_query(statement: &ParsedStatement) -> bool {
    matches!(
        &statement.statement,
        eddy_engine::sql::parser::EddyStatement::Sql(s)
            if matches!(s.as_ref(), datafusion::sql::sqlparser::ast::Statement::Query(_))
    )
}

impl Connection {
    /// Executes a cursor made by DECLARE as a protocol-level portal: up to `max_rows` rows (all
    /// if 0), then PortalSuspended if the row limit was reached.
    async fn execute_cursor<C>(
        &self,
        client: &mut C,
        name: &str,
        max_rows: usize,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut session = self.session.lock().await;
        if session.cursor_schema(name).is_none() {
            return Err(PgWireError::PortalNotFound(name.to_owned()));
        }
        let wanted = (max_rows > 0).then_some(max_rows);
        let mut output = match session.fetch_cursor(name, wanted).await {
            Ok(o) => o,
            Err(e) => {
                session.on_error();
                return Err(user_error(&e, 0));
            }
        };
        let formats = column_formats(&Format::UnifiedText, output.schema.fields().len());
        let zone = session_zone(&session);
        let mut n = 0;
        while let Some(batch) = output.next_batch().await.map_err(|e| user_error(&e, 0))? {
            let rows = self
                .encoder
                .encode(&batch, || data_rows(&batch, &formats, &zone))
                .map_err(|e| user_error(&e, 0))?;
            n += rows.len();
            for row in rows {
                client.feed(PgWireBackendMessage::DataRow(row)).await?;
            }
        }
        end_of_execute(client, max_rows > 0 && n == max_rows, "FETCH", n).await
    }

    /// Starts a query whose rows are fetched `max_rows` at a time by later Executes.
    async fn start_suspended<C>(
        &self,
        _client: &mut C,
        session: &mut Session,
        statement: &ParsedStatement,
        params: &[ScalarValue],
        portal: &Portal<PreparedStatement>,
    ) -> Result<Flow, StatementError>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let result = session
            .execute(statement, params)
            .await
            .map_err(StatementError::Engine)?;
        let StatementResult::Rows(output) = result else {
            return Err(StatementError::Engine(EngineError::Internal(
                "a query did not return rows".to_string(),
            )));
        };
        let formats = column_formats(&portal.result_column_format, output.schema.fields().len());
        let fields = Arc::new(field_infos(&output.schema, &formats));
        let zone = session_zone(session);
        let encoder = self.encoder;
        let rows = futures::stream::unfold(
            (output, formats, std::collections::VecDeque::new()),
            move |(mut output, formats, mut pending)| async move {
                loop {
                    if let Some(row) = pending.pop_front() {
                        return Some((Ok(row), (output, formats, pending)));
                    }
                    match output.next_batch().await {
                        Ok(Some(batch)) => {
                            match encoder.encode(&batch, || data_rows(&batch, &formats, &zone)) {
                                Ok(rows) => pending.extend(rows),
                                Err(e) => {
                                    let e = user_error(&e, 0);
                                    return Some((Err(e), (output, formats, pending)));
                                }
                            }
                        }
                        Ok(None) => return None,
                        Err(e) => {
                            return Some((Err(user_error(&e, 0)), (output, formats, pending)));
                        }
                    }
                }
            },
        );
        portal
            .start(pgwire::api::results::QueryResponse::new(fields, rows))
            .await;
        Ok(Flow::Done)
    }

    /// Sends up to `max_rows` more rows of a suspended portal.
    async fn fetch_suspended<C>(
        &self,
        client: &mut C,
        portal: &Portal<PreparedStatement>,
        max_rows: usize,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use futures::StreamExt;
        let mut n = 0;
        loop {
            // pgwire's `Portal::fetch` reserves room for every row it is asked for at once: an
            // Execute asking for 2^31 rows would allocate tens of GB before the first row.
            let wanted = if max_rows == 0 {
                0
            } else {
                (max_rows - n).min(FETCH_CHUNK_ROWS)
            };
            let fetched = portal.fetch(wanted).await?;
            let mut response = fetched.response;
            while let Some(row) = response.data_rows().next().await {
                client.feed(PgWireBackendMessage::DataRow(row?)).await?;
                n += 1;
            }
            if !fetched.suspended || max_rows == 0 || n >= max_rows {
                return end_of_execute(client, fetched.suspended, "SELECT", n).await;
            }
        }
    }
}

#[async_trait]
impl CopyHandler for Connection {
    async fn on_copy_data<C>(&self, _client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(pending) = self.copy.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            pending.data.extend_from_slice(&copy_data.data);
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let pending = self.copy.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(pending) = pending else {
            return Err(protocol_error(
                "08P01",
                "COPY data without a COPY in progress",
            ));
        };
        let mut session = self.session.lock().await;
        let result = if pending.target.format == eddy_engine::session::CopyFormat::Binary {
            match super::copy_binary::decode(&pending.data, &pending.target.data_fields()) {
                Ok((columns, rows)) => session.copy_in_columns(&pending.target, columns, rows),
                Err(e) => Err(EngineError::InvalidInput(format!(
                    "COPY {}: {e}",
                    pending.target.table_name
                ))),
            }
        } else {
            session.copy_in(&pending.target, &pending.data)
        };
        match result {
            Ok(n) => {
                client.set_transaction_status(transaction_status(session.transaction_state()));
                client
                    .send(PgWireBackendMessage::CommandComplete(
                        Tag::new("COPY").with_rows(n).into(),
                    ))
                    .await?;
                Ok(())
            }
            Err(e) => {
                session.on_error();
                client.set_transaction_status(transaction_status(session.transaction_state()));
                Err(user_error(&e, 0))
            }
        }
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.copy.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut session = self.session.lock().await;
        session.on_error();
        client.set_transaction_status(transaction_status(session.transaction_state()));
        protocol_error("57014", format!("COPY from stdin failed: {}", fail.message))
    }
}

/// The most rows asked of pgwire's portal at once when an Execute wants more (see
/// `Connection::fetch_suspended`).
const FETCH_CHUNK_ROWS: usize = 1024;
