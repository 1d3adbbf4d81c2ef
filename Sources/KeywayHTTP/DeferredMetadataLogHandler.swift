public import Logging

/// A `StreamLogHandler` whose own metadata is formatted when a line is written, not when the
/// metadata is set.
///
/// Hummingbird sets `hb.request.id` on every request's logger, and `StreamLogHandler` formats
/// all of its metadata again on every set: 3 % of a forward-auth request's CPU, for lines that
/// at `info` are almost never written. This handler keeps the metadata itself and hands it to
/// the stream handler as the line's metadata, so the output is the same, byte for byte (Keyway
/// sets no metadata provider; with one, the provider would win over the logger's metadata).
public struct DeferredMetadataLogHandler: LogHandler {
    private var stream: StreamLogHandler
    public var metadata: Logger.Metadata = [:]

    /// - Parameter stream: writes the lines; its own metadata stays empty.
    public init(_ stream: StreamLogHandler) {
        self.stream = stream
    }

    public var logLevel: Logger.Level {
        get { stream.logLevel }
        set { stream.logLevel = newValue }
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { stream.metadataProvider }
        set { stream.metadataProvider = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var event = event
        // A line's own metadata wins over the logger's, as it does in StreamLogHandler.
        event.metadata = metadata.merging(event.metadata ?? [:]) { _, explicit in explicit }
        stream.log(event: event)
    }
}
