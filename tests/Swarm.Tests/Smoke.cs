using TorchSharp;
using Xunit;
namespace Swarm.Tests;
public class Smoke
{
    [Fact]
    public void Torch_Loads_And_Multiplies()
    {
        using var a = torch.ones(4, 4);
        using var b = torch.matmul(a, a);
        Assert.Equal(4f, b[0, 0].item<float>());
    }
}
