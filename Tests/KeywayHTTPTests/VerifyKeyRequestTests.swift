import Foundation
import NIOCore
import Testing

@testable import KeywayHTTP

/// The hand-written reader of `/keys/verify`'s usual body agrees with `JSONDecoder`, and
/// leaves every other body to it.
@Suite struct VerifyKeyRequestTests {
    @Test(arguments: [
        #"{"key":"kw_dev_abc123"}"#,
        " {\n\t\"key\" : \"kw_prod_XYZ\" } \r\n",
        #"{"key":""}"#,
    ])
    func theUsualBodyIsReadAsTheDecoderReadsIt(body: String) throws {
        let simple = try #require(VerifyKeyRequest.simple(ByteBuffer(string: body)))
        let decoded = try JSONDecoder().decode(VerifyKeyRequest.self, from: Data(body.utf8))
        #expect(simple.key == decoded.key)
    }

    @Test(arguments: [
        #"{"key":"kw_dev_\u0041"}"#,  // an escape: the decoder's business
        #"{"key":"kw_dev_a","extra":1}"#,
        #"{"key":"kw_dev_a","key":"kw_dev_b"}"#,
        #"{"Key":"kw_dev_a"}"#,
        #"{"key":"kw_dev_a"} x"#,
        #"{"key":"kw-dev-a"}"#,
        #"{"key":1}"#,
        #"["key"]"#,
        #"{"key":"kw_dev_a""#,
        "",
    ])
    func anyOtherBodyIsLeftToTheDecoder(body: String) {
        #expect(VerifyKeyRequest.simple(ByteBuffer(string: body)) == nil)
    }
}
