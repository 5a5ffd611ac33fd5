// TLS: the listener's certificate, and mutual TLS from Envoy to each service.

import { IDENTITY_PREFIX } from "../../kit/security/tls.js";
import { typed } from "./matchers.js";
import type { EnvoyTopology } from "./topology.js";

const TLS_SOCKET = "envoy.transport_sockets.tls";

/** The certificate a TLS context presents: the edge identity's. */
const edgeCertificate = (tls: NonNullable<EnvoyTopology["tls"]>) => [
  { certificate_chain: { filename: tls.cert }, private_key: { filename: tls.key } },
];

/** The listener's TLS: the edge's certificate; clients need no certificate of their own. */
export function downstreamTls(tls: NonNullable<EnvoyTopology["tls"]>) {
  return {
    name: TLS_SOCKET,
    typed_config: typed("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", {
      common_tls_context: {
        tls_certificates: edgeCertificate(tls),
        // gRPC needs h2; REST and gRPC-Web may come over HTTP/1.1.
        alpn_protocols: ["h2", "http/1.1"],
      },
    }),
  };
}

/**
 * Mutual TLS to a service: Envoy presents the edge identity and accepts only a certificate of
 * the mesh's CA that names the service (`spiffe://shopmesh/<service>`).
 */
export function upstreamTls(tls: NonNullable<EnvoyTopology["tls"]>, service: string) {
  return {
    name: TLS_SOCKET,
    typed_config: typed("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", {
      sni: service,
      common_tls_context: {
        tls_certificates: edgeCertificate(tls),
        validation_context: {
          trusted_ca: { filename: tls.ca },
          match_typed_subject_alt_names: [
            { san_type: "URI", matcher: { exact: `${IDENTITY_PREFIX}${service}` } },
          ],
        },
        alpn_protocols: ["h2"],
      },
    }),
  };
}
