import Foundation
import Logging
import NIOCore
import NIOPosix

/// Receives Envoy's access-log stream (fluentd Forward protocol over a Unix socket; each
/// entry arrives well under a millisecond after Envoy logs it) and hands every
/// record to the recorder in the order its Envoy sent it.
public final class LogReceiver: Sendable {
    let channel: any Channel
    public let path: String

    public static func start(path: String, recorder: MeshRecorder, logger: Logger) async throws -> LogReceiver {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(ForwardDecoder()))
                    try channel.pipeline.syncOperations.addHandler(RecordSink(recorder: recorder, logger: logger))
                }
            }
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
            .get()
        return LogReceiver(channel: channel, path: path)
    }

    private init(channel: any Channel, path: String) {
        self.channel = channel
        self.path = path
    }

    public func close() async {
        try? await channel.close()
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// Splits the byte stream into whole MessagePack values.
struct ForwardDecoder: ByteToMessageDecoder {
    typealias InboundOut = MsgPackValue

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let result: (MsgPackValue?, Int) = try buffer.withUnsafeReadableBytes { bytes in
            var offset = 0
            let value = try MsgPackDecoder.decode(bytes, offset: &offset)
            return (value, offset)
        }
        guard let value = result.0 else {
            // A single message beyond 16 MiB is not a log stream: drop the connection.
            if buffer.readableBytes > 16 << 20 { throw MsgPackDecoder.Malformed() }
            return .needMoreData
        }
        buffer.moveReaderIndex(forwardBy: result.1)
        context.fireChannelRead(wrapInboundOut(value))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

final class RecordSink: ChannelInboundHandler, Sendable {
    typealias InboundIn = MsgPackValue
    let recorder: MeshRecorder
    let logger: Logger

    init(recorder: MeshRecorder, logger: Logger) {
        self.recorder = recorder
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        for record in LogRecord.entries(of: unwrapInboundIn(data)) { recorder.ingest(record) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.warning("access-log stream closed on a malformed message")
        context.close(promise: nil)
    }
}
