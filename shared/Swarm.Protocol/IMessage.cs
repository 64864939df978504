using MessagePack;

namespace Swarm.Protocol;

/// <summary>
/// A message kind carried in <see cref="Envelope.Body"/>. The union keys below are wire values:
/// append-only, never reuse or renumber one. A key unknown to the receiver deserializes to null and
/// <see cref="MessageCodec"/> reports "unknown message kind N" instead of failing hard.
/// </summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>key</term><description>kind (direction)</description></listheader>
/// <item><term>0</term><description><see cref="Hello"/> (node → coordinator)</description></item>
/// <item><term>1</term><description><see cref="Welcome"/> (coordinator → node, reply to Hello)</description></item>
/// <item><term>2</term><description><see cref="Refused"/> (coordinator → node, reply to Hello)</description></item>
/// <item><term>3</term><description><see cref="AssignRange"/> (coordinator → node)</description></item>
/// <item><term>4</term><description><see cref="RangeReady"/> (node → coordinator)</description></item>
/// <item><term>5</term><description><see cref="Heartbeat"/> (node → coordinator)</description></item>
/// <item><term>6</term><description><see cref="Leave"/> (node → coordinator)</description></item>
/// <item><term>7</term><description><see cref="Drain"/> (coordinator → node)</description></item>
/// <item><term>8</term><description><see cref="ForwardRequest"/> (coordinator → first stage, stage → next stage)</description></item>
/// <item><term>9</term><description><see cref="TokenResult"/> (last stage → coordinator)</description></item>
/// <item><term>10</term><description><see cref="StepFailed"/> (any stage → coordinator)</description></item>
/// <item><term>11</term><description><see cref="CloseSession"/> (coordinator → every stage of a route)</description></item>
/// <item><term>12</term><description><see cref="Ack"/> (reply)</description></item>
/// <item><term>13</term><description><see cref="ErrorReply"/> (reply)</description></item>
/// <item><term>14</term><description><see cref="PeerKeys"/> (coordinator → node)</description></item>
/// <item><term>15</term><description><see cref="TensorRequest"/> (node → node)</description></item>
/// <item><term>16</term><description><see cref="TensorChunk"/> (node → node, reply to TensorRequest)</description></item>
/// <item><term>17</term><description><see cref="Introduce"/> (coordinator → node)</description></item>
/// <item><term>18</term><description><see cref="RelayControl"/> (coordinator ↔ relay node)</description></item>
/// </list>
/// </remarks>
[Union(0, typeof(Hello))]
[Union(1, typeof(Welcome))]
[Union(2, typeof(Refused))]
[Union(3, typeof(AssignRange))]
[Union(4, typeof(RangeReady))]
[Union(5, typeof(Heartbeat))]
[Union(6, typeof(Leave))]
[Union(7, typeof(Drain))]
[Union(8, typeof(ForwardRequest))]
[Union(9, typeof(TokenResult))]
[Union(10, typeof(StepFailed))]
[Union(11, typeof(CloseSession))]
[Union(12, typeof(Ack))]
[Union(13, typeof(ErrorReply))]
[Union(14, typeof(PeerKeys))]
[Union(15, typeof(TensorRequest))]
[Union(16, typeof(TensorChunk))]
[Union(17, typeof(Introduce))]
[Union(18, typeof(RelayControl))]
public interface IMessage;
