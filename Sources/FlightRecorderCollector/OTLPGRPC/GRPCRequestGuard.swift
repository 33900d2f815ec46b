import FlightRecorderOTLP
import NIOCore
import NIOHPACK
import NIOHTTP2

/// Sits in front of grpc-swift on every accepted HTTP/2 stream and lets through only a
/// request that `GRPCUnaryRequest` can read; anything else gets a trailers-only response with
/// the status the gRPC specification gives it, so every call ends with a status.
///
/// The guard holds the request (headers and DATA frames) until END_STREAM, bounded by
/// `limit` bytes, then forwards the headers without `grpc-encoding` and the one message
/// decompressed. grpc-swift therefore never inflates outside bytes (its inflater spins forever
/// on a truncated gzip stream) and never sees a framing it would answer with a reset or
/// INTERNAL. A call whose request does not arrive within its `grpc-timeout`, or within
/// `receiveTimeout` when it sends none, is answered DEADLINE_EXCEEDED.
///
/// Runs on the stream's event loop; it does no blocking work (inflating one message of at
/// most `limit` bytes is the same work grpc-swift would have done there).
final class GRPCRequestGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    /// How long a client that sends no `grpc-timeout` may take to send its whole request.
    static let defaultReceiveTimeout: TimeAmount = .seconds(10)

    enum State {
        case awaitingHeaders
        case receiving(HPACKHeaders, ByteBuffer)
        /// The request went on to grpc-swift; later frames pass through.
        case forwarded
        /// A status was sent; later frames are dropped.
        case answered
    }

    private var state = State.awaitingHeaders
    private var deadline: Scheduled<Void>?
    let limit: Int
    let receiveTimeout: TimeAmount

    init(limit: Int, receiveTimeout: TimeAmount = GRPCRequestGuard.defaultReceiveTimeout) {
        self.limit = limit
        self.receiveTimeout = receiveTimeout
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let payload = unwrapInboundIn(data)
        switch (state, payload) {
        case (.awaitingHeaders, .headers(let h)):
            state = .receiving(h.headers, context.channel.allocator.buffer(capacity: 0))
            armDeadline(context: context, header: h.headers.first(name: "grpc-timeout"))
            if h.endStream { finish(context: context) }
        case (.receiving(let headers, var body), .data(let d)):
            guard case .byteBuffer(var bytes) = d.data else { return }
            // The prefix of one message plus the message: anything more cannot be valid.
            guard body.readableBytes + bytes.readableBytes <= limit + 5 else {
                answer(
                    context: context,
                    .resourceExhausted("request exceeds the limit of \(limit) bytes"),
                    inboundOpen: !d.endStream)
                return
            }
            state = .answered  // drop the buffer's reference while appending (no copy)
            body.writeBuffer(&bytes)
            state = .receiving(headers, body)
            if d.endStream { finish(context: context) }
        case (.receiving, .headers(let h)) where h.endStream:
            // Trailers from the client end the request.
            finish(context: context)
        case (.answered, _):
            return
        case (.forwarded, _):
            context.fireChannelRead(data)
        case (_, .data), (_, .headers):
            answer(
                context: context,
                .internalError("unexpected HTTP/2 frame order for a gRPC request"),
                inboundOpen: true)
        default:
            // Stream-level control frames (reset, window updates) are grpc-swift's business.
            context.fireChannelRead(data)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }

    private func armDeadline(context: ChannelHandlerContext, header: String?) {
        var timeout = receiveTimeout
        if let nanos = GRPCUnaryRequest.timeoutNanos(header) { timeout = min(timeout, .nanoseconds(nanos)) }
        let loop = context.eventLoop.assumeIsolated()
        deadline = loop.scheduleTask(in: timeout) { [self] in
            guard case .receiving = state else { return }
            answer(
                context: context,
                .deadlineExceeded("the request message did not arrive within \(timeout.nanoseconds / 1_000_000) ms"),
                inboundOpen: true)
        }
    }

    /// The whole request has arrived: forward it, or answer why not.
    private func finish(context: ChannelHandlerContext) {
        guard case .receiving(var headers, let body) = state else { return }
        deadline?.cancel()
        deadline = nil
        do {
            let message = try GRPCUnaryRequest.message(
                body: body.readableBytesView, encoding: headers.first(name: "grpc-encoding"), limit: limit)
            state = .forwarded
            headers.remove(name: "grpc-encoding")
            var framed = context.channel.allocator.buffer(capacity: message.count + 5)
            framed.writeInteger(UInt8(0))
            framed.writeInteger(UInt32(message.count))
            framed.writeBytes(message)
            context.fireChannelRead(wrapInboundOut(.headers(.init(headers: headers, endStream: false))))
            context.fireChannelRead(wrapInboundOut(.data(.init(data: .byteBuffer(framed), endStream: true))))
            context.fireChannelReadComplete()
        } catch {
            answer(context: context, error, inboundOpen: false)
        }
    }

    /// A trailers-only response (PROTOCOL-HTTP2.md); the stream is reset as well when the
    /// client is still sending, so it stops.
    private func answer(context: ChannelHandlerContext, _ failure: GRPCRequestError, inboundOpen: Bool) {
        state = .answered
        deadline?.cancel()
        deadline = nil
        var headers: HPACKHeaders = [
            ":status": "200", "content-type": "application/grpc",
            "grpc-status": String(failure.statusCode), "grpc-message": GRPCUnaryRequest.percentEncoded(failure.message),
        ]
        if failure.statusCode == 12 {
            headers.add(name: "grpc-accept-encoding", value: GRPCUnaryRequest.acceptedEncodings)
        }
        let written = context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: headers, endStream: true))))
        if inboundOpen {
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
