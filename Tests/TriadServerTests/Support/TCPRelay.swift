import Foundation
import NIOCore
import NIOPosix
import Synchronization
import TriadTesting

/// A loopback port in front of a real service that a test can close and open: closed, every
/// connection (and every relayed one) is dropped at once, as if the service had stopped; open,
/// bytes pass both ways. Lets a test take a shared service "down" for one client only.
final class TCPRelay: Sendable {
    let port: Int
    private let targetHost: String
    private let targetPort: Int
    private let isOpen = Atomic<Bool>(false)
    private let channels = Mutex<[any Channel]>([])
    private let listener: any Channel

    /// `target` is a URL (`http://127.0.0.1:58123`); the relay starts closed.
    init(target: String) throws {
        guard let c = URLComponents(string: target), let host = c.host, let port = c.port else {
            throw SetupError("the relay's target needs a host and port: \(target)")
        }
        targetHost = host
        targetPort = port
        let box = RelayBox()
        listener = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { inbound in
                guard let relay = box.relay, relay.isOpen.load(ordering: .acquiring) else { return inbound.close() }
                return relay.connect(inbound)
            }
            .bind(host: "127.0.0.1", port: 0).wait()
        self.port = listener.localAddress?.port ?? 0
        box.relay = self
    }

    func open() { isOpen.store(true, ordering: .releasing) }

    /// Drops every relayed connection and refuses new ones.
    func close() {
        isOpen.store(false, ordering: .releasing)
        for channel in channels.withLock({ c in
            defer { c.removeAll() }
            return c
        }) { channel.close(promise: nil) }
    }

    func stop() {
        close()
        try? listener.close().wait()
    }

    private func connect(_ inbound: any Channel) -> EventLoopFuture<Void> {
        ClientBootstrap(group: inbound.eventLoop).connect(host: targetHost, port: targetPort).flatMap { outbound in
            self.channels.withLock { $0 += [inbound, outbound] }
            return inbound.pipeline.addHandler(Pipe(partner: outbound)).flatMap {
                outbound.pipeline.addHandler(Pipe(partner: inbound))
            }
        }.flatMapError { _ in inbound.close() }
    }

    /// Writes what one side reads to the other; when one side ends, so does the other.
    private final class Pipe: ChannelInboundHandler, @unchecked Sendable {
        // @unchecked: `partner` is a Channel (Sendable) set once in init; NIO calls the handler
        // only on its channel's event loop.
        typealias InboundIn = ByteBuffer
        let partner: any Channel
        init(partner: any Channel) { self.partner = partner }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            partner.writeAndFlush(unwrapInboundIn(data), promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            partner.close(promise: nil)
        }
    }
}

/// Lets the listener's initializer reach the relay it belongs to (set right after binding).
private final class RelayBox: @unchecked Sendable {
    // @unchecked: written once, before the relay is opened; read only after (a closed relay
    // drops connections without reading it).
    var relay: TCPRelay?
}
