import Testing

@testable import TriadAMQP

#if canImport(Glibc)
    import Glibc
#endif

/// Needs the RabbitMQ that `scripts/services.sh start` runs (or TRIAD_TEST_AMQP_URL).
let brokerURL: String = {
    if let v = getenv("TRIAD_TEST_AMQP_URL") { return String(cString: v) }
    return "amqp://guest:guest@127.0.0.1:55672"
}()

func unique(_ prefix: String) -> String { "\(prefix).\(UInt64.random(in: 0...UInt64.max))" }

@Suite(.serialized) struct AMQPBrokerTests {
    let endpoint: AMQPEndpoint
    init() throws { endpoint = try AMQPEndpoint(url: brokerURL) }

    @Test func confirmedTopicRoundTrip() async throws {
        let exchange = unique("triad.test.events")
        let publisher = AMQPPublisher(endpoint: endpoint)
        try await publisher.connect()
        defer { publisher.close() }
        #expect(publisher.isConnected)
        try await publisher.declareTopicExchange(exchange)

        let consumer = AMQPConsumer(endpoint: endpoint)
        try await consumer.connect()
        defer { consumer.close() }
        try await consumer.declareQueue("", durable: false)
        try await consumer.bind(exchange: exchange, routingKey: "device.#")
        try await consumer.startConsuming()

        // 1000 messages, every third one outside device.#.
        let all = (0..<1000).map { i in
            AMQPMessage(
                exchange: exchange, routingKey: i % 3 == 0 ? "agent.\(i).seen" : "device.\(i).changed",
                body: Array("{\"seq\":\(i)}".utf8), contentType: "application/json",
                messageID: "msg-\(i)", persistent: true)
        }
        let clock = ContinuousClock()
        let elapsed = try await clock.measure {
            for start in stride(from: 0, to: all.count, by: 100) {
                try await publisher.publishConfirmed(Array(all[start..<start + 100]))
            }
        }
        print("published and confirmed 1000 messages in 10 batches: \(elapsed)")

        let expected = all.filter { $0.routingKey.hasPrefix("device.") }
        var received: [AMQPDelivery] = []
        while received.count < expected.count, let d = try await consumer.next(timeout: .seconds(5)) {
            received.append(d)
        }
        #expect(received.count == expected.count)
        for (d, m) in zip(received, expected) {
            #expect(d.routingKey == m.routingKey && d.body == m.body)
            #expect(d.messageID == m.messageID)
            #expect(d.contentType == "application/json")
            #expect(d.persistent)
        }
        // Exactly those: nothing else is waiting.
        #expect(try await consumer.next(timeout: .milliseconds(300)) == nil)
    }

    /// What a consumer at high rates does: deliveries taken in batches (one hop for what has
    /// arrived) and acked many at a time. An ack with `multiple` settles every earlier delivery,
    /// and only those: what follows it comes again to the next consumer of the queue.
    @Test func batchesAndGroupedAcks() async throws {
        let exchange = unique("triad.test.batches")
        let queue = unique("triad.test.batches.queue")
        let publisher = AMQPPublisher(endpoint: endpoint)
        try await publisher.connect()
        defer { publisher.close() }
        try await publisher.declareTopicExchange(exchange)
        let consumer = AMQPConsumer(endpoint: endpoint)
        try await consumer.connect()
        try await consumer.declareQueue(queue, durable: false)
        try await consumer.bind(exchange: exchange, routingKey: "#")
        try await consumer.startConsuming()
        try await publisher.publishConfirmed(
            (0..<300).map { AMQPMessage(exchange: exchange, routingKey: "device.d\($0).changed", body: Array("\($0)".utf8), messageID: "m\($0)") })

        var received: [AMQPDelivery] = []
        var batches = 0
        var ackedThrough = 0
        while received.count < 300 {
            let batch = try await consumer.next(upTo: 64, timeout: .seconds(5), autoAck: false)
            #expect(!batch.isEmpty && batch.count <= 64, "a batch of \(batch.count)")
            guard let last = batch.last else { break }
            received += batch
            batches += 1
            // Through the 200th: the broker stops at 256 unacked (the prefetch), so acks must flow.
            if received.count <= 200 {
                try await consumer.ack(last, multiple: true)
                ackedThrough = received.count
            }
        }
        #expect(received.map { String(decoding: $0.body, as: UTF8.self) } == (0..<300).map(String.init))
        #expect(batches < 300, "what had arrived came together")
        #expect(try await consumer.next(upTo: 64, timeout: .milliseconds(300)).isEmpty)
        consumer.close()

        // Acked in groups through the `ackedThrough`th delivery; the rest come again.
        let again = AMQPConsumer(endpoint: endpoint)
        try await again.connect()
        defer { again.close() }
        try await again.declareQueue(queue, durable: false)
        try await again.startConsuming()
        var redelivered: [String] = []
        while true {
            let batch = try await again.next(upTo: 64, timeout: .milliseconds(500))
            if batch.isEmpty { break }
            redelivered += batch.map { String(decoding: $0.body, as: UTF8.self) }
        }
        #expect(ackedThrough > 0)
        #expect(redelivered == (ackedThrough..<300).map(String.init))
    }

    @Test func publishingToMissingExchangeThrowsReadableErrorAndRecovers() async throws {
        let publisher = AMQPPublisher(endpoint: endpoint)
        try await publisher.connect()
        defer { publisher.close() }
        let missing = unique("triad.test.missing")
        let msgs = (0..<3).map { AMQPMessage(exchange: missing, routingKey: "k", body: [1], messageID: "m\($0)") }
        do {
            try await publisher.publishConfirmed(msgs)
            Issue.record("publish to a missing exchange succeeded")
        } catch {
            print("missing exchange -> \(error)")
            #expect(error.description.contains("broker refused: 404 NOT_FOUND - no exchange '\(missing)'"), "\(error)")
        }
        // The channel was reopened in confirm mode: the same publisher still works.
        #expect(publisher.isConnected)
        try await publisher.publishConfirmed([
            AMQPMessage(
                exchange: "amq.topic", routingKey: "nobody.listens",
                body: [], messageID: "after-error")
        ])
    }

    @Test func connectingToClosedPortThrows() async throws {
        var closed = endpoint
        closed.port = 1  // nothing listens on tcp/1 here
        let publisher = AMQPPublisher(endpoint: closed)
        do {
            try await publisher.connect()
            Issue.record("connected to a closed port")
        } catch {
            #expect(error.description == "cannot connect to \(closed.host):1: connection refused", "\(error)")
        }
        #expect(!publisher.isConnected)
        do {
            try await publisher.publishConfirmed([AMQPMessage(exchange: "", routingKey: "q", body: [], messageID: "x")])
            Issue.record("published without a connection")
        } catch {
            #expect(error.description.contains("not connected"), "\(error)")
        }
    }

    @Test func wrongPasswordIsReadableAndNotLeaked() async throws {
        var bad = endpoint
        bad.password = "definitely-wrong-pw"
        let consumer = AMQPConsumer(endpoint: bad)
        do {
            try await consumer.connect()
            Issue.record("logged in with a wrong password")
        } catch {
            #expect(error.description.contains("cannot log in"), "\(error)")
            #expect(!error.description.contains("definitely-wrong-pw"))
            print("wrong password -> \(error)")
        }
    }

    @Test func consumerReportsBrokerRefusal() async throws {
        let consumer = AMQPConsumer(endpoint: endpoint)
        try await consumer.connect()
        defer { consumer.close() }
        try await consumer.declareQueue("", durable: false)
        do {
            try await consumer.bind(exchange: unique("triad.test.nope"), routingKey: "#")
            Issue.record("bound to a missing exchange")
        } catch {
            #expect(error.description.contains("404 NOT_FOUND"), "\(error)")
        }
        // Still usable on the reopened channel; the exclusive queue belongs to the connection, so it survived.
        try await consumer.bind(exchange: "amq.topic", routingKey: "x.#")
    }

    @Test func nackedMessagesAreCounted() async throws {
        // A queue that holds 2 messages and rejects the rest: the broker nacks publishes 3...5.
        let consumer = AMQPConsumer(endpoint: endpoint)
        try await consumer.connect()
        defer { consumer.close() }
        try await consumer.declareQueue("", durable: false, maxLengthRejectingOverflow: 2)
        let queue = try #require(await consumer.queueName)

        let publisher = AMQPPublisher(endpoint: endpoint)
        try await publisher.connect()
        defer { publisher.close() }
        let msgs = (0..<5).map { AMQPMessage(exchange: "", routingKey: queue, body: [UInt8($0)], messageID: "n\($0)") }
        do {
            try await publisher.publishConfirmed(msgs)
            Issue.record("no nack")
        } catch {
            #expect(error.description == "broker nacked 3 messages", "\(error)")
        }
        // A nack is not a channel error: the next batch still goes through (into amq.topic).
        try await publisher.publishConfirmed([AMQPMessage(exchange: "amq.topic", routingKey: "x", body: [], messageID: "ok")])
    }
}
