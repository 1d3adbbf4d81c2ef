import Foundation
import Hummingbird
import NIOCore

/// Writes JSON straight into a buffer, for the responses on the API's hot path.
///
/// Why: `JSONEncoder` builds a tree of boxed values, looks up generic metadata
/// and sorts keys on every response; for `GET /users/{id}` that cost more than
/// the database read. The output is byte-for-byte what ``KeywayJSON/encoder``
/// writes for the same value (a test compares the two), so clients, docs and
/// the OpenAPI checks cannot tell which one wrote a response.
///
/// Callers write an object's keys in sorted order, as the encoder's
/// `.sortedKeys` does.
struct JSONWriter {
    private(set) var buffer: ByteBuffer
    /// Whether the next key or array element needs a comma before it.
    private var needsComma = false

    init(capacity: Int = 256) {
        buffer = ByteBufferAllocator().buffer(capacity: capacity)
    }

    mutating func object(_ writeFields: (inout JSONWriter) -> Void) {
        separate()
        buffer.writeInteger(UInt8(ascii: "{"))
        needsComma = false
        writeFields(&self)
        buffer.writeInteger(UInt8(ascii: "}"))
        needsComma = true
    }

    mutating func array<Elements: Sequence>(_ elements: Elements, _ writeElement: (inout JSONWriter, Elements.Element) -> Void) {
        separate()
        buffer.writeInteger(UInt8(ascii: "["))
        needsComma = false
        for element in elements {
            writeElement(&self, element)
        }
        buffer.writeInteger(UInt8(ascii: "]"))
        needsComma = true
    }

    /// Writes `"name":` and leaves the writer ready for the value.
    mutating func key(_ name: StaticString) {
        separate()
        buffer.writeInteger(UInt8(ascii: "\""))
        buffer.writeStaticString(name)
        buffer.writeStaticString("\":")
        needsComma = false
    }

    /// Writes `"name":` for a key known only at run time.
    mutating func key(_ name: String) {
        separate()
        writeQuoted(name)
        buffer.writeInteger(UInt8(ascii: ":"))
        needsComma = false
    }

    mutating func string(_ value: String) {
        separate()
        writeQuoted(value)
        needsComma = true
    }

    /// A string, or `null` (never an absent key: clients see the field exists).
    mutating func string(_ value: String?) {
        if let value {
            string(value)
        } else {
            separate()
            buffer.writeStaticString("null")
            needsComma = true
        }
    }

    mutating func integer(_ value: Int) {
        separate()
        buffer.writeString(String(value))
        needsComma = true
    }

    mutating func bool(_ value: Bool) {
        separate()
        buffer.writeStaticString(value ? "true" : "false")
        needsComma = true
    }

    /// A timestamp as ``KeywayJSON/timestamp(_:)`` formats it.
    mutating func timestamp(_ date: Date) {
        string(KeywayJSON.timestamp(date))
    }

    private mutating func separate() {
        if needsComma {
            buffer.writeInteger(UInt8(ascii: ","))
        }
    }

    /// Quotes and escapes as Foundation's encoder does: `"` and `\`, the
    /// control characters (`\b \t \n \f \r` by name, others as `\u00xx`);
    /// everything else, slashes and non-ASCII included, as it is.
    private mutating func writeQuoted(_ value: String) {
        buffer.writeInteger(UInt8(ascii: "\""))
        var value = value
        value.withUTF8 { bytes in
            var start = 0
            for index in bytes.indices {
                let byte = bytes[index]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                buffer.writeBytes(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: bytes[start..<index])))
                start = index + 1
                switch byte {
                case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
                case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
                case 0x08: buffer.writeStaticString("\\b")
                case 0x09: buffer.writeStaticString("\\t")
                case 0x0A: buffer.writeStaticString("\\n")
                case 0x0C: buffer.writeStaticString("\\f")
                case 0x0D: buffer.writeStaticString("\\r")
                default:
                    let hexDigits: StaticString = "0123456789abcdef"
                    buffer.writeStaticString("\\u00")
                    buffer.writeInteger(hexDigits.utf8Start[Int(byte >> 4)])
                    buffer.writeInteger(hexDigits.utf8Start[Int(byte & 0x0F)])
                }
            }
            buffer.writeBytes(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: bytes[start...])))
        }
        buffer.writeInteger(UInt8(ascii: "\""))
    }
}

/// A response body written by ``JSONWriter`` rather than `JSONEncoder`.
protocol JSONWritable: ResponseGenerator {
    func write(to writer: inout JSONWriter)
}

extension JSONWritable {
    /// The JSON alone, for tests and for embedding.
    var jsonBuffer: ByteBuffer {
        var writer = JSONWriter()
        write(to: &writer)
        return writer.buffer
    }

    /// `200 OK` with the same headers Hummingbird's `JSONEncoder` responses carry.
    func response(from request: Request, context: some RequestContext) -> Response {
        let body = jsonBuffer
        var headers = HTTPFields()
        headers.reserveCapacity(4)
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.contentLength] = String(body.readableBytes)
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: body))
    }
}
