//! The socket under a PostgreSQL connection, ending a transaction's pipelined statements with
//! one `Sync`.
//!
//! Why: tokio-postgres ends every statement with a `Sync`, and PostgreSQL flushes its answer at
//! every `Sync`. A transaction's statements sent in one write ([`super::postgres`]) were thus
//! answered in several pieces as PostgreSQL worked through them, and each piece woke the server
//! (on average 2.6 a round trip, most of the server's sleeps with PostgreSQL). Between the
//! statements of one write inside a transaction a `Sync` does nothing but flush: PostgreSQL runs
//! them alike without it, so this layer drops all but the write's last and PostgreSQL answers
//! once.
//!
//! tokio-postgres still needs one `ReadyForQuery` per statement to tell their answers apart, so
//! this layer puts one back after each statement's last message, as PostgreSQL would have
//! sent. After an error PostgreSQL skips the write's remaining statements up to the `Sync`; each
//! is given the error PostgreSQL answers a statement in a failed transaction with (`25P02`).
//! That is what a skipped statement would have been answered on its own, except a skipped
//! `COMMIT`, which on its own would have ended the failed transaction: here the transaction
//! stays open and failed, and its owner rolls it back (`PgTx::commit`). Only writes asked for
//! ([`Pipeline::coalesce_next_write`]) and made of exactly the number of statements announced
//! (`Bind`, `Execute`, `Sync` each) are changed; everything else passes as it is, but COPY,
//! which is not used, is refused. An answer that does not follow
//! the protocol as expected breaks the connection rather than being guessed at; a fatal error
//! (the server shutting the connection) passes as it comes.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::error::SqlState;

/// Shared between a connection's socket and its user: what the next write may be.
#[derive(Debug, Default)]
pub struct Pipeline {
    /// Set once the connection is open: the start-up exchange passes untouched.
    active: AtomicBool,
    /// The next write is this many statements of a transaction, which may share one `Sync`
    /// (0: none announced).
    coalesce: AtomicUsize,
    /// Writes whose statements shared one `Sync`, counted for the whole pool.
    coalesced: Arc<AtomicU64>,
}

impl Pipeline {
    /// A connection's pipeline, counting its coalesced writes in `coalesced`.
    pub fn counting(coalesced: Arc<AtomicU64>) -> Pipeline {
        Pipeline {
            coalesced,
            ..Pipeline::default()
        }
    }

    /// The start-up exchange is over: messages from now on are framed with a type byte.
    pub fn activate(&self) {
        self.active.store(true, Ordering::Release);
    }

    /// The next write holds `statements` statements of an open transaction (after its
    /// `BEGIN`, or starting with it): they may share one `Sync`. A write of another number of
    /// statements (something else queued with them, or part of them) passes as it is.
    pub fn coalesce_next_write(&self, statements: usize) {
        self.coalesce.store(statements, Ordering::Release);
    }

    /// Withdraws [`coalesce_next_write`](Self::coalesce_next_write) if no write took it.
    pub fn no_coalescing(&self) {
        self.coalesce.store(0, Ordering::Release);
    }
}

/// Frontend and backend message types this layer looks at.
const BIND: u8 = b'B';
const EXECUTE: u8 = b'E';
const SYNC: u8 = b'S';
const QUERY: u8 = b'Q';
const COPY_DATA: u8 = b'd';
const COPY_DONE: u8 = b'c';
const COPY_FAIL: u8 = b'f';
const BIND_COMPLETE: u8 = b'2';
const DATA_ROW: u8 = b'D';
const COMMAND_COMPLETE: u8 = b'C';
const EMPTY_QUERY: u8 = b'I';
const PORTAL_SUSPENDED: u8 = b's';
const ERROR_RESPONSE: u8 = b'E';
const READY_FOR_QUERY: u8 = b'Z';
const NOTICE: u8 = b'N';
const NOTIFICATION: u8 = b'A';
const PARAMETER_STATUS: u8 = b'S';

/// What the answers to one write look like.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// Passed as they come, up to this many `ReadyForQuery`.
    AsSent(usize),
    /// The answers to this many statements that share the write's one `Sync`.
    Coalesced(usize),
}

/// Where the answers to a coalesced write are.
#[derive(Debug, Default, PartialEq, Eq)]
struct Progress {
    /// The statement being answered.
    statement: usize,
    /// The last statement answered, or an error ended the rest: only the write's
    /// `ReadyForQuery` is still to come.
    awaiting_ready: bool,
}

/// A socket that lets a transaction's statements share one `Sync` (see the module's comment).
pub struct OneSync<S> {
    io: S,
    pipeline: Arc<Pipeline>,
    /// Written by tokio-postgres, not yet looked at.
    out: BytesMut,
    /// Looked at, going to the socket.
    wire: BytesMut,
    /// Read from the socket, not yet a whole message.
    raw: BytesMut,
    /// Whole messages (and those put back) for tokio-postgres to read.
    ready: BytesMut,
    expect: VecDeque<Expect>,
    progress: Progress,
    /// An answer out of protocol, reported once what came before it has been read.
    broken: Option<io::Error>,
}

impl<S> OneSync<S> {
    pub fn new(io: S, pipeline: Arc<Pipeline>) -> OneSync<S> {
        OneSync {
            io,
            pipeline,
            out: BytesMut::new(),
            wire: BytesMut::new(),
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            expect: VecDeque::new(),
            progress: Progress::default(),
            broken: None,
        }
    }

    fn active(&self) -> bool {
        self.pipeline.active.load(Ordering::Acquire)
    }

    /// Moves what tokio-postgres wrote to the wire, dropping the `Sync`s of a coalesced write.
    fn take_written(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let announced = self.pipeline.coalesce.swap(0, Ordering::AcqRel);
        let out = self.out.split();
        let messages = split_messages(&out)?;
        if messages
            .iter()
            .any(|m| matches!(m[0], COPY_DATA | COPY_DONE | COPY_FAIL))
        {
            // In COPY a `Sync` is not answered: counting answers would go wrong.
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "COPY is not used on these connections",
            ));
        }
        let syncs = messages.iter().filter(|m| m[0] == SYNC).count();
        // Statements as tokio-postgres sends a prepared one: `Bind`, `Execute`, `Sync`.
        let only_statements = messages.len() % 3 == 0
            && messages
                .chunks(3)
                .all(|s| s[0][0] == BIND && s[1][0] == EXECUTE && s[2][0] == SYNC);
        if only_statements && syncs > 1 && syncs == announced {
            self.pipeline.coalesced.fetch_add(1, Ordering::Relaxed);
            for (i, message) in messages.iter().enumerate() {
                if message[0] != SYNC || i + 1 == messages.len() {
                    self.wire.extend_from_slice(message);
                }
            }
            self.expect.push_back(Expect::Coalesced(syncs));
        } else {
            let answered = syncs + messages.iter().filter(|m| m[0] == QUERY).count();
            self.wire.extend_from_slice(&out);
            if answered > 0 {
                self.expect.push_back(Expect::AsSent(answered));
            }
        }
        Ok(())
    }

    /// Moves the whole messages read so far to `ready`, putting back what a coalesced write's
    /// statements lost.
    fn take_read(&mut self) -> io::Result<()> {
        while let Some(len) = whole_message(&self.raw)? {
            let message = self.raw.split_to(len);
            self.answer(message)?;
        }
        Ok(())
    }

    fn answer(&mut self, message: BytesMut) -> io::Result<()> {
        let kind = message[0];
        if matches!(kind, NOTICE | NOTIFICATION | PARAMETER_STATUS) {
            self.ready.extend_from_slice(&message);
            return Ok(());
        }
        match self.expect.front_mut() {
            None => self.ready.extend_from_slice(&message),
            Some(Expect::AsSent(left)) => {
                self.ready.extend_from_slice(&message);
                if kind == READY_FOR_QUERY {
                    *left -= 1;
                    if *left == 0 {
                        self.expect.pop_front();
                    }
                }
            }
            Some(Expect::Coalesced(statements)) => {
                let statements = *statements;
                let progress = &mut self.progress;
                match kind {
                    READY_FOR_QUERY if progress.awaiting_ready => {
                        self.ready.extend_from_slice(&message);
                        self.expect.pop_front();
                        self.progress = Progress::default();
                    }
                    BIND_COMPLETE | DATA_ROW if !progress.awaiting_ready => {
                        self.ready.extend_from_slice(&message);
                    }
                    COMMAND_COMPLETE | EMPTY_QUERY | PORTAL_SUSPENDED
                        if !progress.awaiting_ready =>
                    {
                        self.ready.extend_from_slice(&message);
                        if progress.statement + 1 < statements {
                            put_ready(&mut self.ready, b'T');
                            progress.statement += 1;
                        } else {
                            progress.awaiting_ready = true;
                        }
                    }
                    // The server closing the connection, or any further error once only the
                    // write's `ReadyForQuery` is to come: passed as it comes.
                    ERROR_RESPONSE if progress.awaiting_ready || is_fatal(&message) => {
                        self.ready.extend_from_slice(&message);
                    }
                    ERROR_RESPONSE => {
                        self.ready.extend_from_slice(&message);
                        // PostgreSQL skips the rest of the write: each statement after this
                        // one gets the answer it would have got on its own.
                        for skipped in progress.statement + 1..=statements {
                            put_ready(&mut self.ready, b'E');
                            if skipped < statements {
                                put_aborted(&mut self.ready);
                            }
                        }
                        // The last `ReadyForQuery` put back is the write's own, still to come.
                        let put_back = self.ready.len() - READY_LEN;
                        self.ready.truncate(put_back);
                        progress.awaiting_ready = true;
                    }
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "unexpected message {:?} answering a pipelined write",
                                char::from(kind)
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether an `ErrorResponse` ends the connection (severity `FATAL` or `PANIC`): by its `V`
/// field, never translated, else by `S`, which follows the server's `lc_messages`.
fn is_fatal(message: &[u8]) -> bool {
    let mut fields = message.get(5..).unwrap_or_default();
    let mut severity = None;
    while let Some((&field, rest)) = fields.split_first() {
        if field == 0 {
            break;
        }
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        match field {
            b'V' => {
                severity = Some(&rest[..end]);
                break;
            }
            b'S' => severity = Some(&rest[..end]),
            _ => {}
        }
        fields = rest.get(end + 1..).unwrap_or_default();
    }
    matches!(severity, Some(b"FATAL" | b"PANIC"))
}

/// Length of a `ReadyForQuery` message.
const READY_LEN: usize = 6;

/// Appends a `ReadyForQuery` with this transaction status (`T` in a transaction, `E` failed).
fn put_ready(buf: &mut BytesMut, status: u8) {
    buf.put_u8(READY_FOR_QUERY);
    buf.put_i32(5);
    buf.put_u8(status);
}

/// Appends the error PostgreSQL answers a statement with in a failed transaction.
fn put_aborted(buf: &mut BytesMut) {
    let fields: [(u8, &str); 4] = [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', SqlState::IN_FAILED_SQL_TRANSACTION.code()),
        (
            b'M',
            "current transaction is aborted, commands ignored until end of transaction block",
        ),
    ];
    let body: usize = fields.iter().map(|(_, text)| text.len() + 2).sum::<usize>() + 1;
    buf.put_u8(ERROR_RESPONSE);
    buf.put_i32(i32::try_from(body + 4).unwrap_or(i32::MAX));
    for (field, text) in fields {
        buf.put_u8(field);
        buf.put_slice(text.as_bytes());
        buf.put_u8(0);
    }
    buf.put_u8(0);
}

/// The length of the whole message at the start of `buf`, if all of it is there.
fn whole_message(buf: &[u8]) -> io::Result<Option<usize>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let declared = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let len = usize::try_from(declared)
        .ok()
        .filter(|&len| len >= 4)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message length {declared}"),
            )
        })?
        + 1;
    Ok((buf.len() >= len).then_some(len))
}

/// `buf` cut into its messages; all of it must be whole messages.
fn split_messages(buf: &[u8]) -> io::Result<Vec<&[u8]>> {
    let mut messages = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let len = whole_message(rest)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "a message cut short in a write")
        })?;
        messages.push(&rest[..len]);
        rest = &rest[len..];
    }
    Ok(messages)
}

impl<S: AsyncRead + Unpin> AsyncRead for OneSync<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.active() && this.ready.is_empty() && this.raw.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = this.broken.take() {
                return Poll::Ready(Err(e));
            }
            let mut scratch = [0u8; 8 * 1024];
            let mut chunk = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut chunk))?;
            if chunk.filled().is_empty() {
                // The end: whatever is left is passed on as it is, then the end itself.
                let rest = this.raw.split();
                this.ready.extend_from_slice(&rest);
                if this.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.raw.extend_from_slice(chunk.filled());
            // What was answered before a message out of protocol is still handed over (a
            // `COMMIT`'s answer among it): the error comes after it.
            if let Err(e) = this.take_read() {
                this.raw.clear();
                this.broken = Some(e);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for OneSync<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.active() && this.out.is_empty() && this.wire.is_empty() {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        // Kept until the flush, which ends a write: only then is it known whole.
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_written()?;
        while !this.wire.is_empty() {
            let n = ready!(Pin::new(&mut this.io).poll_write(cx, &this.wire))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            this.wire.advance(n);
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(i32::try_from(body.len()).unwrap() + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }
    fn bind() -> Vec<u8> {
        message(BIND, b"\0s1\0\0\0\0\0\0\0")
    }
    fn execute() -> Vec<u8> {
        message(EXECUTE, b"\0\0\0\0\0")
    }
    fn sync() -> Vec<u8> {
        message(SYNC, b"")
    }
    fn statement() -> Vec<u8> {
        [bind(), execute(), sync()].concat()
    }
    fn bound() -> Vec<u8> {
        message(BIND_COMPLETE, b"")
    }
    fn done(tag: &str) -> Vec<u8> {
        message(COMMAND_COMPLETE, format!("{tag}\0").as_bytes())
    }
    fn row() -> Vec<u8> {
        message(DATA_ROW, b"\0\x01\0\0\0\x01x")
    }
    fn ready(status: u8) -> Vec<u8> {
        message(READY_FOR_QUERY, &[status])
    }
    fn error(code: &str) -> Vec<u8> {
        message(
            ERROR_RESPONSE,
            format!("SERROR\0VERROR\0C{code}\0Mno\0\0").as_bytes(),
        )
    }
    /// The answer PostgreSQL gives a statement of a failed transaction, written out by hand.
    fn aborted() -> Vec<u8> {
        message(
            ERROR_RESPONSE,
            b"SERROR\0VERROR\0C25P02\0Mcurrent transaction is aborted, commands ignored until end of transaction block\0\0",
        )
    }

    /// The layer over one end of a pipe, started; the other end plays PostgreSQL.
    fn open() -> (OneSync<DuplexStream>, Arc<Pipeline>, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let pipeline = Arc::new(Pipeline::default());
        pipeline.activate();
        (OneSync::new(ours, Arc::clone(&pipeline)), pipeline, theirs)
    }

    async fn send(socket: &mut OneSync<DuplexStream>, bytes: &[u8]) {
        socket.write_all(bytes).await.unwrap();
        socket.flush().await.unwrap();
    }

    /// A read that does not come fails the test instead of hanging it.
    async fn within<T>(read: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(5), read)
            .await
            .expect("the bytes never came")
    }

    async fn received(peer: &mut DuplexStream, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        within(peer.read_exact(&mut buf)).await.unwrap();
        buf
    }

    async fn answered(socket: &mut OneSync<DuplexStream>, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        within(socket.read_exact(&mut buf)).await.unwrap();
        buf
    }

    /// Sends `n` statements announced as one write, as a transaction does, and checks that
    /// PostgreSQL receives them with one `Sync`.
    async fn send_coalesced(
        socket: &mut OneSync<DuplexStream>,
        pipeline: &Pipeline,
        peer: &mut DuplexStream,
        n: usize,
    ) {
        pipeline.coalesce_next_write(n);
        send(socket, &vec![statement(); n].concat()).await;
        let mut expected: Vec<u8> = std::iter::repeat_n([bind(), execute()].concat(), n)
            .flatten()
            .collect();
        expected.extend(sync());
        assert_eq!(received(peer, expected.len()).await, expected);
    }

    #[tokio::test]
    async fn a_transactions_write_goes_out_with_one_sync_and_its_answers_come_back_apart() {
        let (mut socket, pipeline, mut peer) = open();
        pipeline.coalesce_next_write(3);
        send(
            &mut socket,
            &[statement(), statement(), statement()].concat(),
        )
        .await;
        let expected = [
            bind(),
            execute(),
            bind(),
            execute(),
            bind(),
            execute(),
            sync(),
        ]
        .concat();
        assert_eq!(received(&mut peer, expected.len()).await, expected);

        let answer = [
            bound(),
            done("INSERT 0 1"),
            bound(),
            row(),
            row(),
            done("SELECT 2"),
            bound(),
            done("COMMIT"),
            ready(b'I'),
        ]
        .concat();
        peer.write_all(&answer).await.unwrap();
        let expected = [
            bound(),
            done("INSERT 0 1"),
            ready(b'T'),
            bound(),
            row(),
            row(),
            done("SELECT 2"),
            ready(b'T'),
            bound(),
            done("COMMIT"),
            ready(b'I'),
        ]
        .concat();
        assert_eq!(answered(&mut socket, expected.len()).await, expected);
        assert_eq!(pipeline.coalesced.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn after_an_error_each_skipped_statement_gets_the_answer_postgres_gives_it() {
        let (mut socket, pipeline, mut peer) = open();
        send_coalesced(&mut socket, &pipeline, &mut peer, 4).await;
        // The second fails; PostgreSQL skips the third and the fourth up to the `Sync`.
        let answer = [bound(), done("INSERT 0 1"), error("23505"), ready(b'E')].concat();
        peer.write_all(&answer).await.unwrap();
        let expected = [
            bound(),
            done("INSERT 0 1"),
            ready(b'T'),
            error("23505"),
            ready(b'E'),
            aborted(),
            ready(b'E'),
            aborted(),
            ready(b'E'),
        ]
        .concat();
        assert_eq!(answered(&mut socket, expected.len()).await, expected);

        // An error in the first: the rest are all skipped.
        send_coalesced(&mut socket, &pipeline, &mut peer, 3).await;
        peer.write_all(&[error("22P02"), ready(b'E')].concat())
            .await
            .unwrap();
        let expected = [
            error("22P02"),
            ready(b'E'),
            aborted(),
            ready(b'E'),
            aborted(),
            ready(b'E'),
        ]
        .concat();
        assert_eq!(answered(&mut socket, expected.len()).await, expected);

        // An error in the last statement needs nothing put back.
        send_coalesced(&mut socket, &pipeline, &mut peer, 2).await;
        let answer = [bound(), done("UPDATE 1"), error("OV001"), ready(b'E')].concat();
        peer.write_all(&answer).await.unwrap();
        let expected = [
            bound(),
            done("UPDATE 1"),
            ready(b'T'),
            error("OV001"),
            ready(b'E'),
        ]
        .concat();
        assert_eq!(answered(&mut socket, expected.len()).await, expected);
    }

    #[tokio::test]
    async fn writes_not_asked_for_or_not_only_statements_pass_as_they_are() {
        let (mut socket, pipeline, mut peer) = open();
        // Not asked for: each statement keeps its `Sync`.
        let two = [statement(), statement()].concat();
        send(&mut socket, &two).await;
        assert_eq!(received(&mut peer, two.len()).await, two);
        // Asked for, but with a simple query in it: as it is, and the ask is spent.
        pipeline.coalesce_next_write(2);
        let with_query = [statement(), message(QUERY, b"ROLLBACK\0"), statement()].concat();
        send(&mut socket, &with_query).await;
        assert_eq!(received(&mut peer, with_query.len()).await, with_query);
        send(&mut socket, &two).await;
        assert_eq!(received(&mut peer, two.len()).await, two);

        // Their answers (six statements, one query) pass untouched, split however they come,
        // and a coalesced write's answers after them are still told apart.
        send_coalesced(&mut socket, &pipeline, &mut peer, 2).await;
        let as_sent: Vec<u8> = [
            bound(),
            done("UPDATE 1"),
            ready(b'T'),
            bound(),
            done("UPDATE 1"),
            ready(b'T'),
            bound(),
            done("UPDATE 1"),
            ready(b'T'),
            done("ROLLBACK"),
            ready(b'I'),
            bound(),
            done("UPDATE 1"),
            ready(b'I'),
            bound(),
            done("UPDATE 1"),
            ready(b'I'),
            bound(),
            done("UPDATE 1"),
            ready(b'I'),
        ]
        .concat();
        let coalesced = [
            bound(),
            done("DELETE 0"),
            bound(),
            done("DELETE 1"),
            ready(b'T'),
        ]
        .concat();
        let all = [as_sent.clone(), coalesced].concat();
        for byte in &all {
            peer.write_all(std::slice::from_ref(byte)).await.unwrap();
        }
        let expected = [
            as_sent,
            bound(),
            done("DELETE 0"),
            ready(b'T'),
            bound(),
            done("DELETE 1"),
            ready(b'T'),
        ]
        .concat();
        assert_eq!(answered(&mut socket, expected.len()).await, expected);
    }

    #[tokio::test]
    async fn notices_pass_anywhere_and_an_answer_out_of_protocol_breaks_the_connection() {
        let (mut socket, pipeline, mut peer) = open();
        send_coalesced(&mut socket, &pipeline, &mut peer, 2).await;
        let notice = message(
            NOTICE,
            b"SWARNING\0C25001\0Mthere is already a transaction\0\0",
        );
        let answer = [bound(), notice.clone(), done("BEGIN"), bound()].concat();
        peer.write_all(&answer).await.unwrap();
        let expected = [bound(), notice, done("BEGIN"), ready(b'T'), bound()].concat();
        assert_eq!(answered(&mut socket, expected.len()).await, expected);
        // A row description where a statement's rows or its end belong.
        peer.write_all(&message(b'T', b"\0\0")).await.unwrap();
        let mut buf = [0u8; 16];
        let e = socket.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[tokio::test]
    async fn a_write_of_other_statements_than_announced_passes_as_it_is() {
        let (mut socket, pipeline, mut peer) = open();
        // Three announced, the write holds two (the rest would follow in another): each
        // keeps its `Sync`, and the announcement is spent.
        pipeline.coalesce_next_write(3);
        let two = [statement(), statement()].concat();
        send(&mut socket, &two).await;
        send(&mut socket, &statement()).await;
        let expected = [two, statement()].concat();
        assert_eq!(received(&mut peer, expected.len()).await, expected);
        let answer = [
            bound(),
            done("INSERT 0 1"),
            ready(b'T'),
            bound(),
            done("INSERT 0 1"),
            ready(b'T'),
            bound(),
            done("COMMIT"),
            ready(b'I'),
        ]
        .concat();
        peer.write_all(&answer).await.unwrap();
        assert_eq!(answered(&mut socket, answer.len()).await, answer);
        assert_eq!(pipeline.coalesced.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn only_whole_statements_are_coalesced_and_copy_is_refused() {
        let (mut socket, pipeline, mut peer) = open();
        // A portal bound apart from its execution keeps its `Sync`s.
        pipeline.coalesce_next_write(2);
        let apart = [bind(), sync(), execute(), sync()].concat();
        send(&mut socket, &apart).await;
        assert_eq!(received(&mut peer, apart.len()).await, apart);
        socket
            .write_all(&message(COPY_DATA, b"1\t2\n"))
            .await
            .unwrap();
        let e = socket.flush().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
    }

    #[tokio::test]
    async fn before_start_up_ends_everything_passes_untouched() {
        let (ours, mut peer) = tokio::io::duplex(1 << 16);
        let pipeline = Arc::new(Pipeline::default());
        let mut socket = OneSync::new(ours, Arc::clone(&pipeline));
        // A start-up message has no type byte; the answer to an SSL request is one byte.
        let startup = [0u8, 0, 0, 8, 4, 210, 22, 47];
        pipeline.coalesce_next_write(2);
        send(&mut socket, &startup).await;
        assert_eq!(received(&mut peer, startup.len()).await, startup);
        peer.write_all(b"N").await.unwrap();
        assert_eq!(answered(&mut socket, 1).await, b"N");
    }

    #[tokio::test]
    async fn a_fatal_error_passes_alone_and_the_end_follows() {
        let (mut socket, pipeline, mut peer) = open();
        send_coalesced(&mut socket, &pipeline, &mut peer, 2).await;
        let fatal = message(
            ERROR_RESPONSE,
            b"SFATAL\0VFATAL\0C57P01\0Mterminating connection\0\0",
        );
        peer.write_all(&[bound(), fatal.clone()].concat())
            .await
            .unwrap();
        drop(peer);
        let expected = [bound(), fatal].concat();
        assert_eq!(answered(&mut socket, expected.len()).await, expected);
        let mut rest = Vec::new();
        within(socket.read_to_end(&mut rest)).await.unwrap();
        assert!(
            rest.is_empty(),
            "nothing put back after a fatal error: {rest:?}"
        );
    }

    #[tokio::test]
    async fn a_prepare_in_a_write_keeps_every_sync() {
        let (mut socket, pipeline, mut peer) = open();
        pipeline.coalesce_next_write(2);
        let parse = message(b'P', b"s9\0SELECT 1\0\0\0");
        let describe = message(b'D', b"Ss9\0");
        let write = [parse, describe, sync(), statement()].concat();
        send(&mut socket, &write).await;
        assert_eq!(received(&mut peer, write.len()).await, write);
    }

    #[tokio::test]
    async fn a_translated_fatal_error_is_told_by_its_english_severity() {
        let (mut socket, pipeline, mut peer) = open();
        send_coalesced(&mut socket, &pipeline, &mut peer, 2).await;
        let fatal = message(
            ERROR_RESPONSE,
            "S致命错误\0VFATAL\0C57P01\0M终止连接\0\0".as_bytes(),
        );
        peer.write_all(&fatal).await.unwrap();
        drop(peer);
        let mut all = Vec::new();
        within(socket.read_to_end(&mut all)).await.unwrap();
        assert_eq!(all, fatal, "passed alone, nothing put back");
    }

    #[tokio::test]
    async fn a_broken_answer_fails_the_connection_after_what_came_before_it() {
        let (mut socket, pipeline, mut peer) = open();
        send_coalesced(&mut socket, &pipeline, &mut peer, 2).await;
        // A length below the header's own four bytes.
        let broken = [
            bound(),
            done("INSERT 0 1"),
            vec![READY_FOR_QUERY, 0, 0, 0, 2],
        ]
        .concat();
        peer.write_all(&broken).await.unwrap();
        let expected = [bound(), done("INSERT 0 1"), ready(b'T')].concat();
        assert_eq!(answered(&mut socket, expected.len()).await, expected);
        let mut buf = [0u8; 8];
        let e = within(socket.read(&mut buf)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[tokio::test]
    async fn an_answer_cut_off_by_the_end_is_passed_on_then_the_end() {
        let (mut socket, pipeline, mut peer) = open();
        send_coalesced(&mut socket, &pipeline, &mut peer, 2).await;
        let cut = [bound(), done("INSERT 0 1")[..4].to_vec()].concat();
        peer.write_all(&cut).await.unwrap();
        drop(peer);
        let mut all = Vec::new();
        within(socket.read_to_end(&mut all)).await.unwrap();
        assert_eq!(all, cut);
    }
}
